"""Bad input to every CLI: one line `error: ...` naming the problem and the fix, exit code 2, nothing on disk changed.

One table-driven test (issue 6). Each row runs `python -m jaxkd.<cli> ...` from the repository root on inputs made
in its own tmp_path (copies of shared assets — a finished tiny ViT run, a CNN workdir imported from a torch_ref .pth,
the .pth files — and small files its `prep` writes) and checks: exit code 2; stderr's non-empty lines are exactly one
line starting with "error: " (no traceback, no warning) of at most MAX_LINE characters; that line holds every
expected substring (the problem: field / file; and the fix); no file under tmp_path created, changed or removed
(sha256; a new directory is allowed only if empty). A new row that reveals a bug is fixed in jaxkd, not marked.
The rows are in tests/bad_input_cases.py; tests/test_bad_input_generated.py draws more.

How a row runs. Most rows run in the pytest worker (_run_in_process): runpy runs `jaxkd.<cli>` as __main__ with
sys.argv, cwd and os.environ as the subprocess would have them, stderr captured at the file-descriptor level
(capfd: C code's output counts too), warnings printed under a fresh interpreter's filters rather than recorded by
pytest, pytest's log handlers set aside, SystemExit read for the exit code; afterwards the process state a run may
change is put back (see _run_in_process). This spares each row an interpreter start and the JAX import (~3 s). The
assertions are the same for both kinds of row. Rows marked `subprocess=` in the table (each with its reason) still
start a fresh interpreter (_run_watched): one per CLI, and those whose behaviour needs a fresh process — XLA_FLAGS
read when the backend starts, the precheck before JAX is imported, what a library prints on its first import or at
interpreter exit. A row that keeps files changed is stopped either way (killed, or _Stopped raised in-process).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bad_input_cases import CASES, VIT_ARGS, Case

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 1000  # "one clear line": longer is not readable
TIMEOUT = 300
CHANGE_GRACE_S = 1.0  # a process that keeps a file under tmp_path changed this long is damaging the disk: stop it

# ----------------------------------------------------------------------------------------------------------------
# Shared assets: built once per session, across pytest-xdist workers (a file lock in the session's temp root)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "bad_input_assets"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def cli_env(shared_root) -> dict:
    """Offline, CPU, one persistent XLA compilation cache for the session (outside every row's tmp_path): models are
    built eagerly, and a cache hit turns the ~60 small compilations of a model build into file reads."""
    env = dict(os.environ, JAXKD_OFFLINE="1", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(shared_root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("XLA_FLAGS", None)
    return env


def _built_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`build(root / name)`, run by one worker of the session; the others wait for it and reuse the result."""
    target, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                shutil.rmtree(target, ignore_errors=True)
                build(target)
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _check_run(cmd: list[str], env: dict) -> None:
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{cmd}: {r.stderr[-3000:]}"


def _save_torch_cnn(path: Path, variant: str, in_channels: int) -> None:
    import torch

    from torch_ref import cnn as tcnn

    torch.manual_seed(0)
    torch.save(tcnn.AdaptiveCNN(variant, in_channels, 10).state_dict(), path)


@pytest.fixture(scope="session")
def asset_vit(shared_root, cli_env) -> Path:
    """A finished tiny-ViT run: config.json, data.json, checkpoints/2, model/, reports."""
    return _built_once(shared_root, "vit", lambda p: _check_run(
        [sys.executable, "-m", "jaxkd.train", *VIT_ARGS, "--workdir", str(p)], cli_env))


@pytest.fixture(scope="session")
def asset_pth10(shared_root) -> Path:
    """torch_ref's MNIST-variant AdaptiveCNN (1 channel, 10 classes) as a bare state-dict .pth."""
    return _built_once(shared_root, "cnn10.pth", lambda p: _save_torch_cnn(p, "mnist", 1))


@pytest.fixture(scope="session")
def asset_pth_cifar(shared_root) -> Path:
    """torch_ref's CIFAR-variant AdaptiveCNN (3 channels, 11 blocks, 17.6 M parameters) as a state-dict .pth."""
    return _built_once(shared_root, "cifar_cnn.pth", lambda p: _save_torch_cnn(p, "cifar", 3))


@pytest.fixture(scope="session")
def asset_cnn(shared_root, cli_env, asset_pth10) -> Path:
    """A 10-class CNN workdir for the digits (config.json, data.json, model/), imported by jaxkd.convert."""
    return _built_once(shared_root, "cnn", lambda p: _check_run(
        [sys.executable, "-m", "jaxkd.convert", "from-torch", "--config", "configs/quickstart.py",
         "--torch", str(asset_pth10), "--out", str(p)], cli_env))


ASSETS = ("vit", "cnn", "pth10", "pth_cifar")

# ----------------------------------------------------------------------------------------------------------------
# The test


def _hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _stat_tree(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (mtime_ns, size)} of every regular file under root."""
    out = {}
    for f in root.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                st = f.stat()
                out[str(f.relative_to(root))] = (st.st_mtime_ns, st.st_size)
        except OSError:  # vanished while walking
            continue
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int, str | None]]:
    return {k: (*v, _hash(root / k)) for k, v in _stat_tree(root).items()}


def _changes(root: Path, before: dict) -> list[str]:
    """Files created, removed, or with other bytes than in `before` (rewriting the same bytes is no change)."""
    now = _stat_tree(root)
    changed = [k for k in before if k not in now]
    for k, (mtime, size) in now.items():
        if k not in before:
            changed.append(k)
        elif (mtime, size) != before[k][:2] and (size != before[k][1] or _hash(root / k) != before[k][2]):
            changed.append(k)
    return sorted(changed)


def _run_watched(cmd: list[str], env: dict, root: Path, before: dict) -> tuple[int, str, str]:
    """(returncode, stderr, note). A process that keeps files under root changed for CHANGE_GRACE_S is killed: the
    row fails anyway, and this spares it e.g. a whole training run."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        t0, since, note = time.monotonic(), None, ""
        while True:
            try:
                rc = p.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            # the run's own lock names its holder while it runs; at exit it must be as before (checked by the caller)
            changed = [k for k in _changes(root, before) if Path(k).name != "jaxkd.lock"]
            since = (since or time.monotonic()) if changed else None
            late = time.monotonic() - t0 > TIMEOUT
            if late or (since is not None and time.monotonic() - since > CHANGE_GRACE_S):
                p.kill()
                rc = p.wait()
                note = "timed out" if late else f"(killed while it kept these files changed: {changed[:8]})"
                break
        err.seek(0)
        return rc, err.read().decode(errors="replace"), note


def _materialise(case: Case, tmp: Path, request) -> dict[str, str]:
    """Copies the shared assets the row names into tmp and runs its prep; returns the format keys."""
    keys = {"tmp": str(tmp), "work": str(tmp / "work"), "out": str(tmp / "out")}
    text = " ".join(case.args + case.expect)
    for name in ASSETS:
        if "{" + name + "}" in text:
            src = request.getfixturevalue(f"asset_{name}")
            dst = tmp / src.name
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
            keys[name] = str(dst)
    if case.prep is not None:
        case.prep(tmp)
    return keys


# ----------------------------------------------------------------------------------------------------------------
# In-process runs: `python -m jaxkd.<cli>` re-enacted in the pytest worker (runpy), its process state put back after


@pytest.fixture(scope="session")
def fresh_warning_filters(cli_env) -> list[tuple]:
    """warnings.filters of a fresh interpreter in the CLIs' environment (PYTHONWARNINGS included): an in-process row
    runs under these, not pytest's, so a warning prints on stderr as it would in a subprocess."""
    code = ("import warnings; print([(a, getattr(m, 'pattern', m), c.__name__, getattr(mod, 'pattern', mod), n)"
            " for a, m, c, mod, n in warnings.filters])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env, capture_output=True, text=True, check=True)
    import ast
    import builtins
    import re

    return [(a, m and re.compile(m, re.I), getattr(builtins, c), mod, n)
            for a, m, c, mod, n in ast.literal_eval(r.stdout)]


class _Stopped(BaseException):
    """Raised in the main thread by the in-process watchdog (not an Exception: jaxkd's `except Exception` lets it
    pass)."""


def _run_in_process(cli: str, argv: list[str], env: dict, filters: list[tuple], root: Path,
                    before: dict) -> tuple[int, str]:
    """(returncode, note) of `python -m jaxkd.<cli> argv` re-enacted in this process: runpy runs the module as
    __main__ from the repository root, with `env` as os.environ, a fresh interpreter's warning filters, no pytest log
    handlers, and sys.stdout / stderr new streams on fds 1 / 2 (which the caller captures). SystemExit gives the exit
    code; an uncaught exception prints its traceback and gives 1, as the interpreter does. A watchdog stops a run
    that keeps files under `root` changed (as _run_watched does) by raising _Stopped in the main thread.

    Afterwards it puts back what a run may change that would leak into the worker's next row: os.environ (XLA_FLAGS,
    ...), cwd, sys.argv / sys.path / sys.stdout / sys.stderr, user modules a config file imported, jax.config values
    (matmul precision, compilation cache), warnings filters, the root logger's handlers and level, sys.excepthook /
    unraisablehook (jaxkd.checkpoint replaces them after a failed write), signal handlers (train's SIGTERM / SIGINT).
    The worker's copy of jaxkd.<cli> is hidden during the run (a fresh `python -m` has not imported it; runpy would
    warn). Callbacks registered with atexit stay registered (running a library's at its first import would break
    it for later rows), so interpreter-exit output is the subprocess rows' to catch."""
    import gc
    import importlib
    import io
    import logging
    import runpy
    import signal
    import threading
    import traceback
    import warnings

    import jax

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_sys = (sys.argv[:], sys.path[:], sys.stdout, sys.stderr, sys.excepthook, sys.unraisablehook)
    saved_modules = set(sys.modules)
    saved_jax = dict(jax.config.values)
    saved_signals = {s: signal.getsignal(s) for s in signal.valid_signals()}
    saved_signals = {s: h for s, h in saved_signals.items() if h is not None}
    root_logger = logging.getLogger()
    saved_log = (root_logger.handlers[:], root_logger.level)
    package = importlib.import_module("jaxkd")
    name = f"jaxkd.{cli}"
    if hasattr(sys.modules.get(name), "__path__"):  # a package: `python -m` runs its __main__
        name += ".__main__"
    hidden, hidden_attr = sys.modules.pop(name, None), package.__dict__.get(cli)

    main = threading.current_thread() is threading.main_thread()
    done, note = threading.Event(), []

    def watch():
        t0, since = time.monotonic(), None
        while not done.wait(0.5):
            changed = [k for k in _changes(root, before) if Path(k).name != "jaxkd.lock"]
            since = (since or time.monotonic()) if changed else None
            late = time.monotonic() - t0 > TIMEOUT
            if late or (since is not None and time.monotonic() - since > CHANGE_GRACE_S):
                note.append("timed out" if late else f"(stopped while it kept these files changed: {changed[:8]})")
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                return

    def stopped(signum, frame):
        raise _Stopped()

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(ROOT)
        sys.argv[:] = ["-m", *argv]  # runpy puts the module's file in argv[0], as `python -m` does
        sys.path.insert(0, str(ROOT))  # `python -m` puts the working directory first
        # sys.stdout / stderr write to fds 1 / 2 (captured by the caller), not to pytest's stream objects: a handler
        # or a default argument that keeps the stream it saw writes to the fd in later rows too, as in a subprocess
        sys.stdout, sys.stderr = (io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=True,
                                                   errors="backslashreplace") for fd in (1, 2))
        with warnings.catch_warnings():
            warnings.filters[:] = filters
            warnings._filters_mutated()  # new once-per-location registries: every row sees its own warnings
            warnings.showwarning = warnings._showwarning_orig  # pytest records warnings; print them, as python does
            warnings._showwarnmsg_impl = lambda m: (m.file or sys.stderr).write(warnings._formatwarnmsg_impl(m))
            root_logger.handlers = [h for h in saved_log[0] if not type(h).__module__.startswith("_pytest")]
            root_logger.setLevel(logging.WARNING)
            if main:
                signal.signal(signal.SIGUSR1, stopped)
                watcher.start()
            gc.freeze()  # the worker's objects: the collection below looks only at what the run left
            try:
                runpy.run_module(f"jaxkd.{cli}", run_name="__main__", alter_sys=True)
                rc = 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except _Stopped:
                rc = -9
            except Exception:  # noqa: BLE001  (as the interpreter does)
                traceback.print_exc()
                rc = 1
            finally:
                done.set()
                if main:
                    watcher.join()
                    signal.signal(signal.SIGUSR1, saved_signals.get(signal.SIGUSR1, signal.SIG_DFL))
            gc.collect()  # finalizers that print (at interpreter exit in a subprocess) print now, in this row
            gc.unfreeze()
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        gc.unfreeze()
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv[:], sys.path[:] = saved_sys[:2]
        sys.stdout, sys.stderr, sys.excepthook, sys.unraisablehook = saved_sys[2:]
        if hidden is not None:
            sys.modules[name] = hidden
            if hidden_attr is not None:
                setattr(package, cli, hidden_attr)
        for new in set(sys.modules) - saved_modules:  # user code a config file imported (not libraries nor jaxkd),
            module = sys.modules[new]  # and aliases of the run's __main__ (multiprocessing's __mp_main__)
            file = getattr(module, "__file__", None) or ""
            if getattr(module, "__name__", None) == "__main__" or (
                    file and not file.startswith((sys.prefix, sys.base_prefix, str(ROOT / "jaxkd")))):
                del sys.modules[new]
        for k, v in saved_jax.items():
            if jax.config.values.get(k) != v:
                jax.config.update(k, v)
        for s, h in saved_signals.items():
            if signal.getsignal(s) is not h:
                signal.signal(s, h)
        root_logger.handlers[:] = saved_log[0]
        root_logger.setLevel(saved_log[1])
    return rc, "".join(note)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_nothing_changed(case: Case, tmp_path: Path, request, cli_env, capfd,
                                                      fresh_warning_filters):
    keys = _materialise(case, tmp_path, request)
    env = dict(cli_env, **{k: v.format(**keys) for k, v in case.env})
    before = _snapshot(tmp_path)
    argv = [a.format(**keys) for a in case.args]
    if case.subprocess:
        rc, stderr, note = _run_watched([sys.executable, "-m", f"jaxkd.{case.cli}", *argv], env, tmp_path, before)
    else:
        capfd.readouterr()  # what the prep printed
        rc, note = _run_in_process(case.cli, argv, env, fresh_warning_filters, tmp_path, before)
        stderr = capfd.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    how = "subprocess" if case.subprocess else "in-process"
    print(f"{how} rc={rc} {note}| " + " / ".join(lines)[-MAX_LINE:])  # shown with -rA, and on failure
    shown = f"{how} rc={rc} {note}\nstderr (last 3000 characters):\n{stderr[-3000:]}"
    assert rc == 2, shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert len(lines[0]) <= MAX_LINE, f"{len(lines[0])}-character error line: {lines[0][:300]}..."
    for want in case.expect:
        assert want.format(**keys) in lines[0], f"{want.format(**keys)!r} not in {lines[0]!r}"
    changed = _changes(tmp_path, before)
    assert not changed, f"files created, changed or removed: {changed[:10]}"

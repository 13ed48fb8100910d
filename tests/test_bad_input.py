"""Bad input to every CLI: one line `error: ...` naming the problem and the fix, exit code 2, nothing on disk changed.

One table-driven test (issue 6). Each row runs `python -m jaxkd.<cli> ...` from the repository root on inputs made
in its own tmp_path (copies of shared assets — a finished tiny ViT run, a CNN workdir imported from a torch_ref .pth,
the .pth files — and small files its `prep` writes) and checks: exit code 2; stderr's non-empty lines are exactly one
line starting with "error: " (no traceback, no warning) of at most MAX_LINE characters; that line holds every
expected substring (the problem: field / file; and the fix); no file under tmp_path created, changed or removed
(sha256; a new directory is allowed only if empty). A new row that reveals a bug is fixed in jaxkd, not marked.
The rows are in tests/bad_input_cases.py; tests/test_bad_input_generated.py draws more.
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
from pathlib import Path
from typing import Callable

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


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_nothing_changed(case: Case, tmp_path: Path, request, cli_env):
    keys = _materialise(case, tmp_path, request)
    env = dict(cli_env, **{k: v.format(**keys) for k, v in case.env})
    before = _snapshot(tmp_path)
    cmd = [sys.executable, "-m", f"jaxkd.{case.cli}", *(a.format(**keys) for a in case.args)]
    rc, stderr, note = _run_watched(cmd, env, tmp_path, before)
    lines = [line for line in stderr.splitlines() if line.strip()]
    print(f"rc={rc} {note}| " + " / ".join(lines)[-MAX_LINE:])  # shown with -rA, and on failure
    shown = f"rc={rc} {note}\nstderr (last 3000 characters):\n{stderr[-3000:]}"
    assert rc == 2, shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert len(lines[0]) <= MAX_LINE, f"{len(lines[0])}-character error line: {lines[0][:300]}..."
    for want in case.expect:
        assert want.format(**keys) in lines[0], f"{want.format(**keys)!r} not in {lines[0]!r}"
    changed = _changes(tmp_path, before)
    assert not changed, f"files created, changed or removed: {changed[:10]}"

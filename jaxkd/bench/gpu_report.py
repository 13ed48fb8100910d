"""``python -m jaxkd.bench gpu-report --out BENCH_GPU.md [--smoke] [--budget-s 360]``: one Markdown report of jaxkd on
a GPU, in at most ``--budget-s`` seconds (about 6 minutes on one H200).

Four parts, each a subprocess with its own timeout (a failing or timed-out part is reported, never fatal), run one
after the other so that their timings do not disturb each other (largest share first; time a part leaves unused
goes to the parts after it):

1. **parity** -- the parity suite on the device: ``python -m pytest -q -n 8 parity_tests -p no:cacheprovider -rfE``
   (passed / failed / skipped counts and the failing tests' names; on a timeout, the counts so far);
2. **models** -- the training step against the best PyTorch setting: ``python -m jaxkd.bench models --device gpu``
   (every torch variant's step time, the ratio to the best, MFU, compile times);
3. **trainer** -- ``python -m jaxkd.bench trainer --device gpu --presets cifar_cnn,deit_cifar`` (the trainer's
   images/s against its bare step), when that benchmark exists, else 'not available';
4. **train** -- one short real run, ``python -m jaxkd.train --config configs/cifar_cnn_fast.py
   --config.training.num_epochs=2`` (``configs/quickstart.py`` when that preset or its data is missing), with a
   cold compilation cache: time to the first step, images/s, accuracy.

The report names the device (nvidia-smi: name, driver, CUDA), the versions of jax, jaxlib, flax, optax and torch,
and the exact command of every part. Children run with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (the parity suite's
8 workers and torch share one GPU). ``--smoke`` runs every part on the CPU with tiny settings (a handful of parity
tests, one model at batch 2, the quickstart's smoke variant), the parts side by side, in well under a minute:
CI checks the report's shape with it; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxkd.config import ConfigError as UsageError  # bad options: one error: line, exit 2

DESCRIPTION = ("one Markdown GPU report: parity suite on the device, step vs the best torch, trainer benchmark, "
               "a short "
               "training run (--smoke: all of it on CPU in seconds)")

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
#: part -> share of --budget-s (execution order)
SHARES = {"models": 0.47, "parity": 0.195, "trainer": 0.195, "train": 0.14}
TITLES = {"parity": "1. Parity suite on the device", "models": "2. Training step: jaxkd vs the best PyTorch setting",
          "trainer": "3. Trainer vs its bare step", "train": "4. A short real training run"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="BENCH_GPU.md", help="the Markdown report to write (default BENCH_GPU.md)")
    p.add_argument("--smoke", action="store_true", help="every part on CPU with tiny settings, in seconds (CI)")
    p.add_argument("--budget-s", type=float, default=360.0, help="time for all parts together (default 360)")
    p.add_argument("--parts", default=",".join(SHARES), help=f"comma-separated subset of {', '.join(SHARES)}")
    p.add_argument("--parity-workers", type=int, default=8, help="pytest-xdist workers of the parity part")
    p.add_argument("--train-config", default="",
                   help="preset of the training run (default configs/cifar_cnn_fast.py when it and its data exist, "
                        "else configs/quickstart.py)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs of the training run (default 2)")
    p.add_argument("--train-args", default="",
                   help="extra arguments for the training run, e.g. '--config.data.source=npz:/tmp/cifar10.npz'")
    p.add_argument("--trainer-args", default="", help="extra arguments for the trainer part (one shell-quoted string)")
    p.add_argument("--models-args", default="", help="extra arguments for the models part (one shell-quoted string)")


# --- running the parts -------------------------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float, env: dict, log: Path) -> dict:
    """Runs `cmd` in its own process group; on timeout kills the whole group (pytest-xdist workers too).
    Returns rc (None on timeout), seconds, timed_out and the output (stdout + stderr, also written to `log`)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=max(timeout, 1)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    return {"cmd": cmd, "rc": None if timed_out else rc, "timed_out": timed_out, "timeout_s": round(timeout),
            "seconds": round(time.perf_counter() - t0, 1), "output": log.read_text(errors="replace")}


def _bench_help(name: str) -> str | None:
    """`python -m jaxkd.bench NAME --help` text, or None when there is no such benchmark."""
    if not (ROOT / "jaxkd" / "bench" / f"{name}.py").exists():
        return None
    proc = subprocess.run([PY, "-m", "jaxkd.bench", name, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    return proc.stdout if proc.returncode == 0 else None


def _train_config(args) -> tuple[str, str]:
    """(preset, why) of the training run."""
    if args.smoke:
        return "configs/quickstart.py:smoke", "smoke: the quickstart's smoke variant (embedded digits)"
    if args.train_config:
        return args.train_config, "--train-config"
    from jaxkd.config import shared_data

    fast = ROOT / "configs" / "cifar_cnn_fast.py"
    data = Path(shared_data("cifar10-jpeg.tar.gz"))
    if not fast.exists():
        return "configs/quickstart.py", "configs/cifar_cnn_fast.py is missing: the quickstart instead"
    if not data.exists():
        return "configs/quickstart.py", (f"CIFAR-10 ({data}) is missing, set JAXKD_SHARED_DATA: "
                                         "the quickstart (embedded digits) instead")
    return "configs/cifar_cnn_fast.py", f"CIFAR-10 from {data}"


def _commands(args, tmp: Path) -> dict:
    """part -> (command, note); the command is None when the part is not available."""
    cmds = {}
    if args.smoke:
        cmds["parity"] = ([PY, "-m", "pytest", "-q", "parity_tests/test_losses_parity.py", "-k", "cross_entropy_hard",
                           "-p", "no:cacheprovider", "-rfE"], "smoke: 8 loss tests on CPU")
        cmds["models"] = ([PY, "-m", "jaxkd.bench", "models", "--device", "cpu", "--quick", "--models", "mnist_cnn",
                           "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0", "--torch-modes",
                           "eager,channels_last", "--json", str(tmp / "models.json")], "smoke: one model, batch 2")
    else:
        cmds["parity"] = ([PY, "-m", "pytest", "-q", "-n", str(args.parity_workers), "parity_tests", "-p",
                           "no:cacheprovider", "-rfE"], "")
        share = _shares(args).get("models", args.budget_s)
        cmds["models"] = ([PY, "-m", "jaxkd.bench", "models", "--device", "gpu", "--max-total-s",
                           str(int(max(share - 15, 30))), *shlex.split(args.models_args), "--json",
                           str(tmp / "models.json")], "")
    help_text = _bench_help("trainer") if "trainer" in args.parts.split(",") else None
    if help_text is None:
        cmds["trainer"] = (None, "not available: `python -m jaxkd.bench trainer` does not exist in this checkout")
    else:
        extra = []
        if args.smoke:  # the smallest run the benchmark offers: one small preset, one step
            extra = ["--smoke"] if "--smoke" in help_text else (["--quick"] if "--quick" in help_text else [])
            extra += [a for flag, a in (("--presets", ["--presets", "mnist_cnn"]), ("--steps", ["--steps", "1"]),
                                        ("--batch-size", ["--batch-size", "4"])) if flag in help_text for a in a]
        else:  # on the GPU, the two presets of the issue's headline (each compiles for 20-30 s there)
            extra = ["--device", "gpu"] if "--device" in help_text else []
            extra += ["--presets", "cifar_cnn,deit_cifar"] if "--presets" in help_text else []
        extra += shlex.split(args.trainer_args)
        cmds["trainer"] = ([PY, "-m", "jaxkd.bench", "trainer", *extra, "--json", str(tmp / "trainer.json")], "")
    preset, why = _train_config(args)
    cmd = [PY, "-m", "jaxkd.train", "--config", preset, "--workdir", str(tmp / "train")]
    if not args.smoke:
        cmd.append(f"--config.training.num_epochs={args.train_epochs}")
    cmd += shlex.split(args.train_args)
    cmds["train"] = (cmd, why)
    return cmds


def _shares(args) -> dict:
    parts = [p for p in SHARES if p in args.parts.split(",")]
    total = sum(SHARES[p] for p in parts)
    return {p: args.budget_s * SHARES[p] / total for p in parts}


def _env(args, tmp: Path) -> dict:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1",
               JAXKD_COMPILATION_CACHE=str(tmp / "xla-cache"))  # cold: the training run's first step compiles
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if args.smoke:
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("XLA_FLAGS", None)
    return env


def run(args) -> dict:
    unknown = [p for p in args.parts.split(",") if p not in SHARES]
    if unknown:
        raise UsageError(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(SHARES)}")
    if args.budget_s <= 0:
        raise UsageError("--budget-s must be > 0")
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.UTC)
    shares = _shares(args)
    with tempfile.TemporaryDirectory(prefix="jaxkd-gpu-report-") as tmp_name:
        tmp = Path(tmp_name)
        env = _env(args, tmp)
        cmds = _commands(args, tmp)
        results: dict = {}
        todo = [p for p in SHARES if p in shares]
        if args.smoke:  # tiny parts side by side: the report's shape, not its numbers
            procs = {}
            for part in todo:
                cmd, note = cmds[part]
                if cmd is not None:
                    print(f"[{part}] {_show(cmd)}", flush=True)
                    procs[part] = _start(cmd, env, tmp / f"{part}.log")
            done = _wait_all(procs, 240.0)
            for part in todo:
                cmd, note = cmds[part]
                results[part] = done[part] if cmd is not None else {}
                results[part]["note"] = note
        else:
            for i, part in enumerate(todo):
                cmd, note = cmds[part]
                left = args.budget_s - (time.perf_counter() - t0)
                timeout = max(left - sum(shares[p] for p in todo[i + 1:]), min(30.0, max(left, 1.0)))
                if cmd is None:
                    results[part] = {"note": note}
                    continue
                print(f"[{part}] timeout {timeout:.0f} s: {_show(cmd)}", flush=True)
                results[part] = _run(cmd, timeout, env, tmp / f"{part}.log")
                results[part]["note"] = note
                r = results[part]
                print(f"[{part}] {'timed out' if r['timed_out'] else 'exit ' + str(r['rc'])} after "
                      f"{r['seconds']} s", flush=True)
        figures = {
            "parity": _parse_pytest(results["parity"].get("output", "")) if "parity" in results else None,
            "models": _read_json(tmp / "models.json"),
            "trainer": _read_json(tmp / "trainer.json"),
            "train": _train_figures(tmp / "train", results["train"].get("output", "")) if "train" in results
            else None,
        }
    info = _environment()
    text = render(args, info, results, figures, started, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return {"out": str(args.out), "environment": info, "figures": figures,
            "parts": {p: {k: v for k, v in r.items() if k != "output"} for p, r in results.items()}}


def _start(cmd, env, log: Path):
    f = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    proc.t0, proc.log_file = time.perf_counter(), f
    return proc


def _wait_all(procs: dict, timeout: float) -> dict:
    """Waits for every process of `procs` (part -> Popen from :func:`_start`), each one's time measured to its own
    end; kills (its process group) whatever is still running after `timeout` seconds."""
    out, t0 = {}, time.perf_counter()
    while len(out) < len(procs):
        for part, proc in procs.items():
            if part in out:
                continue
            timed_out = time.perf_counter() - t0 > timeout
            if timed_out and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.poll() if not timed_out else proc.wait()
            if rc is None:
                continue
            proc.log_file.close()
            out[part] = {"cmd": proc.args, "rc": None if timed_out else rc, "timed_out": timed_out,
                         "timeout_s": timeout, "seconds": round(time.perf_counter() - proc.t0, 1),
                         "output": Path(proc.log_file.name).read_text(errors="replace")}
        time.sleep(0.2)
    return out


# --- reading the parts' figures ----------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _parse_pytest(output: str) -> dict:
    """Counts from pytest's summary line (or, when it was killed first, from its progress characters) and the
    names of the failed / erroring tests."""
    counts: dict = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    summary = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed|error)", ln) and " in " in ln]
    if summary:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", summary[-1]):
            counts["errors" if what.startswith("error") else what] = int(n)  # pytest: "1 error", "2 errors"
        counts["complete"] = True
    else:  # killed by the timeout: count the progress characters (. passed, F failed, s skipped, E error)
        progress = "".join(ln.split(" [")[0] for ln in output.splitlines() if re.fullmatch(r"[.FsExX]+( \[.*\])?",
                                                                                          ln.strip()))
        counts = {"passed": progress.count("."), "failed": progress.count("F"), "skipped": progress.count("s"),
                  "errors": progress.count("E"), "complete": False}
    failures = [ln.split(" - ")[0].split(" ", 1)[1] for ln in output.splitlines()
                if ln.startswith(("FAILED ", "ERROR "))]
    counts["failures"] = failures
    return counts


def _train_figures(workdir: Path, output: str = "") -> dict | None:
    """summary.json's figures and the logged images/s; from a run stopped by its time limit, what it logged so far
    (the time to the first step from its 'first step done' line)."""
    summary = _read_json(workdir / "summary.json")
    rows = []
    try:
        rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    except (OSError, ValueError):
        pass
    ips = [r["images_per_s"] for r in rows if r.get("kind") == "train" and "images_per_s" in r]
    out = {k: summary.get(k) for k in ("time_to_first_step_s", "test_accuracy", "val_accuracy", "best_val_accuracy",
                                       "wall_s", "epochs", "steps", "device", "experiment_name")} if summary else {}
    m = re.search(r"first step done ([\d.]+) s after start", output)
    if m and out.get("time_to_first_step_s") is None:
        out["time_to_first_step_s"] = float(m.group(1))
    if ips:
        later = ips[1:] or ips  # the first log interval includes the compilation
        out.update(images_per_s_median=sorted(later)[len(later) // 2], images_per_s_max=max(ips),
                   images_per_s_rows=len(ips))
    return out or None


def _environment() -> dict:
    info = {"python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count()}
    for pkg in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint",
                "torch", "numpy"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        if q.returncode == 0 and q.stdout.strip():
            info["gpus"] = [ln.strip() for ln in q.stdout.strip().splitlines()]
        full = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", full)
        if m:
            info["cuda_driver_api"] = m.group(1)
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    return info


# --- the Markdown ------------------------------------------------------------------------------------------------

def _show(cmd) -> str:
    return " ".join(shlex.quote("python" if a == PY else a) for a in cmd)


def _status(r: dict) -> str:
    if not r or "cmd" not in r:
        return "not run"
    if r["timed_out"]:
        return f"**timed out** after {r['seconds']:.0f} s (limit {r['timeout_s']:.0f} s)"
    return f"exit {r['rc']}{'' if r['rc'] == 0 else ' (**failed**)'} after {r['seconds']:.0f} s"


def _tail(text: str, n: int = 25) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _f(x, fmt="{:.1f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) and x == x else "-"


def render(args, info: dict, results: dict, figures: dict, started, total_s: float) -> str:
    L = ["# jaxkd GPU report", ""]
    argv = getattr(args, "argv", None) or ["gpu-report"]
    cmdline = "python -m jaxkd.bench " + " ".join(shlex.quote(a) for a in argv)
    L += [f"Written by `{cmdline}` on {started:%Y-%m-%d %H:%M} UTC in {total_s:.0f} s (budget "
          f"{args.budget_s:.0f} s). Every number below was measured in this run, on this machine."]
    if args.smoke:
        L += ["", "**Smoke run (`--smoke`): every part on the CPU with tiny settings. It checks that the report is "
              "produced; its numbers mean nothing.**"]
    L += ["", "## Device and versions", "", "| what | value |", "| --- | --- |"]
    models = figures.get("models") or {}
    meta = models.get("meta", {})
    gpus = info.get("gpus")
    L.append(f"| device (nvidia-smi: name, driver, memory) | {'; '.join(gpus) if gpus else 'no nvidia-smi / no GPU'} |")
    L.append(f"| CUDA (driver API, nvidia-smi) | {info.get('cuda_driver_api', 'unknown')} |")
    if meta:
        L.append(f"| jax device seen by the models part | {meta.get('devices')} x {meta.get('device_kind')} "
                 f"({meta.get('backend')}) |")
        if meta.get("torch_cuda_version"):
            L.append(f"| torch CUDA build | {meta['torch_cuda_version']} |")
    for pkg in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint",
                "torch", "numpy", "python"):
        if pkg in info:
            L.append(f"| {pkg} | {info[pkg]} |")
    L.append(f"| host | {info.get('host')}, {info.get('cpus')} CPUs |")
    L += ["", "## Summary", ""] + _summary(results, figures)
    for part in ("parity", "models", "trainer", "train"):
        if part not in results:
            continue
        r = results[part]
        L += ["", f"## {TITLES[part]}", ""]
        if "cmd" not in r:
            L += [r.get("note") or "not available"]
            continue
        L += ["```sh", _show(r["cmd"]), "```", "", f"Status: {_status(r)}." + (f" {r['note']}." if r.get("note")
                                                                                 else "")]
        L += [""] + globals()[f"_section_{part}"](r, figures.get(part))
    L += ["", "## Parts", "", "| part | status | seconds | limit |", "| --- | --- | ---: | ---: |"]
    for part, r in results.items():
        L.append(f"| {part} | {_status(r) if 'cmd' in r else r.get('note', '')} | {r.get('seconds', '-')} | "
                 f"{_f(r.get('timeout_s'), '{:.0f}')} |")
    return "\n".join(L) + "\n"


def _summary(results, figures) -> list[str]:
    out = []
    p = figures.get("parity")
    if p is not None and "parity" in results:
        state = "" if p.get("complete") else " (incomplete: stopped by its time limit)"
        out.append(f"- Parity on the device: {p.get('passed', 0)} passed, {p.get('failed', 0)} failed, "
                   f"{p.get('errors', 0)} errors, {p.get('skipped', 0)} skipped{state}.")
    m = figures.get("models")
    if m:
        for r in m["models"].values():
            if "skipped" in r:
                out.append(f"- Step, {r['model']}: skipped ({r['skipped']}).")
                continue
            mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
            out.append(f"- Step, {r['model']} (batch {r['batch']}): jaxkd {r['jaxkd_step_ms']:.1f} ms vs best torch "
                       f"({r.get('torch_best') or '-'}) {_f(r.get('torch_step_ms'))} ms: ratio "
                       f"{_f(r.get('time_ratio'), '{:.2f}')}{mfu}.")
    elif "models" in results:
        out.append("- Step benchmark: no figures (see its section).")
    if "trainer" in results:
        out.append("- Trainer benchmark: " + ("see its section." if figures.get("trainer") else "not available."))
    t = figures.get("train")
    if t:
        out.append(f"- Training run ({t.get('experiment_name') or 'did not finish'}): first step after "
                   f"{_f(t.get('time_to_first_step_s'))} s, {_f(t.get('images_per_s_median'), '{:.0f}')} images/s, "
                   f"test accuracy {_f(t.get('test_accuracy'), '{:.4f}')}.")
    elif "train" in results:
        out.append("- Training run: no figures (see its section).")
    return out or ["- nothing ran"]


def _section_parity(r, p) -> list[str]:
    p = p or {}
    L = ["| passed | failed | errors | skipped | complete |", "| ---: | ---: | ---: | ---: | --- |",
         f"| {p.get('passed', 0)} | {p.get('failed', 0)} | {p.get('errors', 0)} | {p.get('skipped', 0)} | "
         f"{'yes' if p.get('complete') else 'no (time limit)'} |"]
    if p.get("failures"):
        L += ["", "Failed:", ""] + [f"- `{f}`" for f in p["failures"]]
    L += ["", "<details><summary>output (tail)</summary>", "", "```", _tail(r["output"], 40), "```", "</details>"]
    return L


def _section_models(r, m) -> list[str]:
    if not m:
        return ["No figures were written.", "", "```", _tail(r["output"], 30), "```"]
    meta = m["meta"]
    modes = meta.get("torch_modes") or []
    L = [f"jaxkd {meta.get('precision')} on {meta.get('device_kind')}; torch {meta.get('torch', '-')} variants "
         f"{', '.join(modes) or '-'} (AdamW {meta.get('torch_optim', '-')}, bf16 autocast "
         f"{'on' if meta.get('precision') == 'bfloat16' else 'off'}, TF32 {'on' if meta.get('torch_tf32') else 'off'}"
         f"). Step times are medians over alternating rounds; ratio = jaxkd / the best torch variant."]
    if m.get("partial"):
        L += ["", "**Partial**: the benchmark was stopped before it finished; the models below are those it completed."]
    L += ["", "| model | batch | jaxkd ms | " + " | ".join(f"torch {x} ms" for x in modes) +
          " | best | ratio | TFLOP/s | MFU | jaxkd compile s | torch first step s |",
          "| --- | ---: | ---: | " + " | ".join("---:" for _ in modes) + " | --- | ---: | ---: | ---: | ---: | --- |"]
    notes = []
    for x in m["models"].values():
        if "skipped" in x:
            L.append(f"| {x['model']} | skipped: {x['skipped']} |")
            continue
        cells = []
        for mode in modes:
            v = x.get("torch_variants", {}).get(mode, {})
            cells.append(_f(v.get("step_ms")) if "step_ms" in v else ("n/a" if "skipped" in v else "failed"))
            if "error" in v:
                notes.append(f"- {x['model']}, {mode}: {v['error']}")
        first = ", ".join(f"{k} {v['first_step_s']:.1f}" for k, v in x.get("torch_variants", {}).items()
                          if "first_step_s" in v)
        L.append(f"| {x['model']} | {x['batch']} | {x['jaxkd_step_ms']:.1f} | " + " | ".join(cells) +
                 f" | {x.get('torch_best') or '-'} | {_f(x.get('time_ratio'), '{:.2f}')} | "
                 f"{_f(x.get('jaxkd_tflops_per_s'))} | {_f(x.get('mfu'), '{:.1%}')} | {x['jaxkd_compile_s']:.1f} | "
                 f"{first or '-'} |")
    if meta.get("assumed_peak_flops"):
        L += ["", f"MFU = XLA cost-analysis FLOPs per step / step time / an **assumed peak of "
              f"{meta['assumed_peak_flops'] / 1e12:.0f} TFLOP/s** ({meta.get('assumed_peak_source')})."]
    if notes:
        L += ["", "Torch variants that failed:", ""] + notes
    L += ["", f"Run time {_f(meta.get('total_s'), '{:.0f}')} s."]
    return L


def _section_trainer(r, t) -> list[str]:
    L = ["```", _tail(r["output"], 30), "```"]
    if t is None:
        return ["No JSON figures were written (not available)."] + L
    text = json.dumps(t, indent=2)
    return L + ["", "<details><summary>JSON</summary>", "", "```json", text[:20000], "```", "</details>"]


def _section_train(r, t) -> list[str]:
    if not t:
        return ["No summary was written.", "", "```", _tail(r["output"], 30), "```"]
    if t.get("test_accuracy") is None:
        L0 = ["The run did not finish (no summary.json): the figures below are what it logged before it stopped.", ""]
    else:
        L0 = []
    L = ["| time to first step s | images/s (median, max) | test accuracy | val accuracy | epochs | wall s |",
         "| ---: | ---: | ---: | ---: | ---: | ---: |",
         f"| {_f(t.get('time_to_first_step_s'))} | {_f(t.get('images_per_s_median'), '{:.0f}')}, "
         f"{_f(t.get('images_per_s_max'), '{:.0f}')} | {_f(t.get('test_accuracy'), '{:.4f}')} | "
         f"{_f(t.get('val_accuracy'), '{:.4f}')} | {t.get('epochs', '-')} | {_f(t.get('wall_s'), '{:.0f}')} |", "",
         "Cold start: the run had an empty compilation cache of its own. images/s are the trainer's logged "
         "intervals after the first (which includes the compilation)."]
    return L0 + L

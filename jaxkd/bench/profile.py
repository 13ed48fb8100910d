"""``python -m jaxkd.bench profile``: where a jaxkd training step spends its time, by XLA operation.

For each model of :data:`jaxkd.bench.models.CASES` (the same presets, overrides, batches and step as ``python -m
jaxkd.bench models``, jaxkd side only), compiles the step, runs ``--warmup`` steps, then traces ``--steps`` steps with
``jax.profiler.trace`` and reads the trace (Perfetto JSON) back. Each XLA operation event (a fusion, convolution,
dot, library call, ...) is attributed to its *kind*: the HLO name without its numeric suffix
(``transpose_copy_fusion.69`` -> ``transpose_copy_fusion``; ``ynn_fusion`` = a call into the YNNPACK library).
It prints, per model, the step time, the top kinds (ms per step, share of the step, number of operations) and the top
single operations; ``--json FILE`` keeps them all.

XLA:CPU emits one trace event per operation only with ``--xla_cpu_enable_xprof_traceme=true``, which this command
adds to ``XLA_FLAGS`` before jax starts (in a fresh process if jax is already running). The instrumentation costs a
little, so the step times printed here are not benchmark figures: those come from ``python -m jaxkd.bench models``.
Operations the XLA:CPU runtime runs inside a library kernel without their own event (some Eigen convolutions) show
up only in the ``untraced`` line (step time minus the traced operations).

Example: ``python -m jaxkd.bench profile --models deit_kd --top 12``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from jaxkd.config import ConfigError as UsageError  # bad options: one error: line, exit 2

DESCRIPTION = "where a jaxkd training step spends its time, by XLA operation kind (trace of the models' steps)"

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"

# Trace events that are not XLA operations: Python frames ($...), the runtime's own spans, host transfers.
_NOT_OPS = re.compile(r"^(\$|ThunkExecutor|PjitFunction|CommonPjRt|ParseArguments|Handle inputs|SlinkyThreadPool|"
                      r"TfrtCpu|PjRt|ExecuteHelper|Execute|BufferFromHost|TransferTo|end_to_end)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jaxkd.bench.models import CASES

    p.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--batch-size", type=int, default=0, help="one batch for every model (default: the models "
                   "benchmark's CPU batch per model)")
    p.add_argument("--steps", type=int, default=3, help="traced steps per model")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--top", type=int, default=15, help="rows printed per table")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS (e.g. to profile an XLA option)")


def op_kind(name: str) -> str:
    """'transpose_copy_fusion.69' -> 'transpose_copy_fusion'; 'convolution-base-dilated.5' ->
    'convolution-base-dilated'; names without a numeric suffix are returned as they are."""
    return re.sub(r"(\.\d+)+$", "", name)


def summarize_trace(events: list[dict], n_steps: int) -> dict:
    """Per-kind and per-op totals (ms per step) of the complete ('X') events of an XLA trace.

    Args:
      events: Perfetto/Chrome trace events (dicts with 'ph', 'name', 'dur' in microseconds).
      n_steps: the number of steps the trace covers (totals are divided by it).
    Returns:
      dict(kinds=[{kind, ms_per_step, ops (distinct operations of the kind)}], ops=[{op, ms_per_step}],
      traced_ms_per_step), each list sorted by time, descending.
    """
    by_op: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = str(e.get("name", ""))
        if not name or _NOT_OPS.match(name):
            continue
        by_op[name] += float(e["dur"]) / 1e3
    kinds: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for name, ms in by_op.items():
        kinds[op_kind(name)] += ms
        counts[op_kind(name)] += 1
    return {
        "kinds": [{"kind": k, "ms_per_step": v / n_steps, "ops": counts[k]}
                  for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])],
        "ops": [{"op": k, "ms_per_step": v / n_steps} for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])],
        "traced_ms_per_step": sum(by_op.values()) / n_steps,
    }


def _read_trace(trace_dir: str) -> list[dict]:
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise ValueError(f"the profiler wrote no trace under {trace_dir} (is the jax profiler available?)")
    with gzip.open(sorted(files)[-1]) as f:
        return json.load(f).get("traceEvents", [])


def _profile_model(name: str, args) -> dict:
    import jax

    from jaxkd.bench import _jax_side as js
    from jaxkd.bench.models import CASES, _configs

    label, preset, _, _, batches = CASES[name]
    batch = args.batch_size or batches[0]
    cfg, teacher_cfg = _configs(name, args, "float32")
    mixing = cfg.data.augmentation.mixup.enabled or cfg.data.augmentation.cutmix.enabled
    case = js.JaxCase(cfg, teacher_cfg, js.make_batch(cfg, batch, mixing))
    if args.warmup:
        case.steps(args.warmup)
    t = time.perf_counter()
    case.steps(args.steps)
    step_ms = (time.perf_counter() - t) / args.steps * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            case.steps(args.steps)
        summary = summarize_trace(_read_trace(tmp), args.steps)
    summary["untraced_ms_per_step"] = max(0.0, step_ms - summary["traced_ms_per_step"])
    return {"model": label, "preset": f"configs/{preset}.py", "batch": batch, "step_ms": step_ms, **summary}


def format_profile(r: dict, top: int) -> str:
    step = r["step_ms"]
    lines = [f"{r['model']} (batch {r['batch']}): {step:.1f} ms/step with tracing on",
             f"  {'kind':<40} {'ms/step':>9} {'share':>7} {'ops':>6}"]
    for k in r["kinds"][:top]:
        lines.append(f"  {k['kind'][:40]:<40} {k['ms_per_step']:>9.2f} {k['ms_per_step'] / step:>7.1%} "
                     f"{k['ops']:>6}")
    lines.append(f"  {'untraced (library kernels, gaps)':<40} {r['untraced_ms_per_step']:>9.2f} "
                 f"{r['untraced_ms_per_step'] / step:>7.1%}")
    lines.append("  top operations: " + ", ".join(f"{o['op']} {o['ms_per_step']:.1f} ms" for o in r["ops"][:5]))
    return "\n".join(lines)


def run(args) -> dict:
    """Entry point of the subcommand; returns the figures (and prints the tables)."""
    from jaxkd.bench.models import CASES

    unknown = [m for m in args.models.split(",") if m not in CASES]
    if unknown or not args.models:
        raise UsageError(f"--models: unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
    if args.steps < 1 or args.warmup < 0 or args.top < 1 or args.batch_size < 0:
        raise UsageError("--steps and --top must be >= 1, --warmup and --batch-size >= 0")
    flags = " ".join(f for f in [os.environ.get("XLA_FLAGS", ""), TRACEME_FLAG, args.xla_flags] if f).strip()
    if "jax" in sys.modules and os.environ.get("XLA_FLAGS", "") != flags:
        return _run_child(args, flags)  # XLA_FLAGS act only before jax starts
    os.environ["XLA_FLAGS"] = flags
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    meta = {"backend": jax.default_backend(), "devices": jax.device_count(), "xla_flags": flags,
            "steps": args.steps, "warmup": args.warmup}
    print(f"profiling on {meta['devices']} x {jax.devices()[0].device_kind} ({meta['backend']}); "
          f"XLA_FLAGS={flags!r}", flush=True)
    results = {}
    for name in args.models.split(","):
        results[name] = _profile_model(name, args)
        print(format_profile(results[name], args.top), flush=True)
    return {"meta": meta, "models": results}


def _run_child(args, flags: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "profile.json")
        argv, skip = [], False
        for a in getattr(args, "argv", None) or ["profile"]:  # drop --json FILE / --json=FILE: the child writes out
            if skip or a.startswith("--json="):
                skip = False
            elif a == "--json":
                skip = True
            else:
                argv.append(a)
        cmd = [sys.executable, "-m", "jaxkd.bench", *argv, "--json", out]
        proc = subprocess.run(cmd, env=dict(os.environ, XLA_FLAGS=flags))
        if proc.returncode != 0:
            raise ValueError(f"the profile run failed (exit {proc.returncode})")
        with open(out) as f:
            return json.load(f)

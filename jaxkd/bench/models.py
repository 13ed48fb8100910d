"""``python -m jaxkd.bench [models] [--quick] [--device cpu|gpu] [--json FILE]``: training-step throughput, jaxkd vs
torch_ref, side by side in one run.

Models (same shapes, batch and data on both sides; fp32 and AdamW by default):

=============  ===================================  ==========================  =====  =====  =====
name           what                                 preset                      CPU    quick  GPU
=============  ===================================  ==========================  =====  =====  =====
mnist_cnn      AdaptiveCNN 'mnist' (709 k params)   configs/mnist_cnn.py        128    16     1024
cifar_cnn      AdaptiveCNN 'cifar' (17.6 M)         configs/cifar_cnn.py [1]    64     8      512
deit_tiny      DeiT-Tiny on CIFAR (4.34 M)          configs/deit_cifar.py [2]   64     8      1024
deit_kd        DeiT-Tiny KD, CIFAR CNN teacher      configs/deit_cifar.py       32     8      512
=============  ===================================  ==========================  =====  =====  =====

[1] with ``training.optimizer=adamw`` (the preset trains with SGD; the benchmark compares AdamW on both sides).
[2] ``distillation.enabled=False``: both heads trained on the labels (jaxkd.tasks.Supervised).

The jaxkd side is the trainer's own step (:mod:`jaxkd.bench._jax_side`: ``steps.make_train_step`` with the
preset's task, optimiser, label smoothing, clipping, state donation and data sharding); the torch side the
torch_ref models, losses and AdamW (:mod:`jaxkd.bench._torch_side`). Timing: compile and ``--warmup`` steps
first, then ``--repeats`` rounds, each timing ``--steps`` steps of one side then the other (the order alternating
between rounds, so drifting load on a shared machine hits both alike), each round ending when the results are
ready (``block_until_ready`` / a host float). Step time = median over rounds; ``time_ratio`` = jaxkd step time /
torch step time (< 1: jaxkd faster). torch runs with as many intra-op threads as the cores XLA uses.

``--host-devices N|auto`` splits the CPU into N XLA devices (``--xla_force_host_platform_device_count``; auto = one
per core) and shards the batch over them, as the trainer does over its mesh; a list (``1,auto``) measures each
setting in its own process and reports them all. ``--device gpu`` times bf16 with cuDNN flash attention and adds
MFU (XLA cost-analysis FLOPs per step x steps/s over the device's peak; cuDNN attention kernels count no FLOPs
there); it stops with an error without a GPU (torch is timed on CUDA when its build has CUDA, else skipped).

Experiments (for the performance report, never what the trainer runs): ``--scan K`` (K steps per dispatch),
``--no-donate``, ``--xla-flags``, ``--matmul-precision`` and ``--before`` (earlier implementations of the same
math, :data:`jaxkd.bench._jax_side.BEFORE`, to time a model-code change before vs after). ``--torch-omp-wait passive`` (default) keeps torch's OpenMP threads
from spinning: on a loaded 2-core host spinning made the torch step 3-10x slower and the comparison meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DESCRIPTION = "training-step images/s of jaxkd vs torch_ref (MNIST CNN, CIFAR CNN, DeiT-Tiny, DeiT-Tiny KD)"

#: name -> (label, preset, overrides, teacher?, default batch per (cpu, quick, gpu))
CASES = {
    "mnist_cnn": ("MNIST CNN", "mnist_cnn", [], False, (128, 16, 1024)),
    "cifar_cnn": ("CIFAR CNN", "cifar_cnn", ["--config.training.optimizer=adamw"], False, (64, 8, 512)),
    "deit_tiny": ("DeiT-Tiny CIFAR", "deit_cifar", ["--config.distillation.enabled=False"], False, (64, 8, 1024)),
    "deit_kd": ("DeiT-Tiny KD (CIFAR CNN teacher)", "deit_cifar", [], True, (32, 8, 512)),
}
_COUNTS = {"cpu": (5, 5, 1), "quick": (1, 3, 1), "gpu": (20, 7, 5)}  # (steps per round, rounds, warm-up steps)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small batches, few steps (about 1-2 min on 2 cores)")
    p.add_argument("--device", default="cpu", help="cpu (fp32) or gpu (bf16 + cuDNN flash attention, MFU)")
    p.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--batch-size", type=int, default=0, help="one batch for every model (default: per model)")
    p.add_argument("--steps", type=int, default=0, help="steps timed per round and side")
    p.add_argument("--repeats", type=int, default=0, help="timed rounds per side (the median is reported)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed steps after compiling")
    p.add_argument("--host-devices", default="1",
                   help="CPU only: XLA devices the host is split into, N or 'auto' (one per core), or a list "
                        "'1,auto' to compare settings (each in its own process)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: the cores XLA uses)")
    p.add_argument("--precision", default="", help="float32 or bfloat16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--scan", type=int, default=1, help="experiment: K training steps per dispatch via lax.scan")
    p.add_argument("--no-donate", action="store_true", help="experiment: do not donate the state to the step")
    p.add_argument("--xla-flags", default="", help="experiment: extra XLA_FLAGS for the jaxkd side")
    p.add_argument("--matmul-precision", default="", help="experiment: jax_default_matmul_precision")
    p.add_argument("--before", default="", help="experiment: time earlier implementations of the same math, "
                   "comma-separated (maxpool: flax reduce-window max pool; patchify: PatchEmbed.proj as a strided "
                   "convolution; relu: the CNN's ReLUs as jax.nn.relu; dense: the ViT's Linear kernel "
                   "gradient as autodiff's x^T g)")
    p.add_argument("--torch-omp-wait", default="passive", choices=("passive", "active", "inherit"),
                   help="OMP_WAIT_POLICY of torch's OpenMP threads (default passive: on a loaded host, spinning "
                        "threads make torch several times slower; 'inherit' keeps the environment's)")
    p.add_argument("--no-torch", action="store_true", help="time the jaxkd side only")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _host_device_settings(spec: str) -> list[int]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item == "auto":
            out.append(_cores())
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise ValueError(f"--host-devices {spec!r}: use a positive count, 'auto', or a comma list such as 1,auto")
    return out


def _check_args(args) -> None:
    if args.device not in ("cpu", "gpu"):
        raise ValueError(f"--device {args.device!r}: use cpu or gpu")
    unknown = [m for m in args.models.split(",") if m not in CASES]
    if unknown or not args.models:
        raise ValueError(f"--models: unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
    if args.precision not in ("", "float32", "bfloat16"):
        raise ValueError(f"--precision {args.precision!r}: use float32 or bfloat16")
    for name in ("batch_size", "steps", "repeats", "threads"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    if args.scan < 1:
        raise ValueError("--scan must be >= 1")
    from jaxkd.bench._jax_side import BEFORE

    bad = [x for x in args.before.split(",") if x and x not in BEFORE]
    if bad:
        raise ValueError(f"--before: unknown {', '.join(bad)}; choose from {', '.join(BEFORE)}")
    _host_device_settings(args.host_devices)


def _xla_flags(n_devices: int, extra: str) -> str:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if n_devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={n_devices}")
    return " ".join(flags + [f for f in extra.split() if f not in flags])


def run(args) -> dict:
    """Entry point of the subcommand; returns the JSON figures."""
    _check_args(args)
    if args.device == "gpu":
        settings = [1]
    else:
        settings = _host_device_settings(args.host_devices)
    results = []
    for n in settings:
        flags = _xla_flags(n, args.xla_flags)
        if "jax" not in sys.modules:
            os.environ["XLA_FLAGS"] = flags
            if args.device == "cpu":
                os.environ["JAX_PLATFORMS"] = "cpu"
        if len(settings) == 1 and os.environ.get("XLA_FLAGS", "") == flags:
            results.append(_run_here(args, n))
        else:  # jax is already up with other flags, or several settings: one fresh process per setting
            results.append(_run_child(args, n, flags))
    if len(results) == 1:
        return results[0]
    _print_comparison(results)
    return {"host_device_settings": results}


def _run_child(args, n: int, flags: str) -> dict:
    """Runs this benchmark for one host-device setting in a fresh process (XLA_FLAGS act only before jax starts)."""
    argv, skip = [], False
    for a in getattr(args, "argv", None) or ["models"]:
        if skip:
            skip = False
        elif a in ("--host-devices", "--json"):
            skip = True
        elif not a.startswith(("--host-devices=", "--json=")):
            argv.append(a)
    if argv[:1] != ["models"]:
        argv.insert(0, "models")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "child.json")
        cmd = [sys.executable, "-m", "jaxkd.bench", *argv, "--host-devices", str(n), "--json", out]
        print(f"--- {n} XLA host device(s): XLA_FLAGS={flags!r}", flush=True)
        env = dict(os.environ, XLA_FLAGS=flags)
        if args.device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise ValueError(f"the benchmark for --host-devices {n} failed (exit {proc.returncode})")
        with open(out) as f:
            return json.load(f)


def _configs(name: str, args, precision: str):
    from ml_collections import ConfigDict

    from jaxkd import config as config_lib
    from jaxkd import distill

    _, preset, overrides, has_teacher, _ = CASES[name]
    cfg = config_lib.load(preset, overrides + list(getattr(args, "overrides", None) or []))
    cfg = ConfigDict(cfg.to_dict())
    if precision == "bfloat16":
        cfg.training.use_amp, cfg.training.use_bf16 = True, True
        if cfg.model.model_type == "deit" and args.device == "gpu":
            cfg.vit.attention = "cudnn"  # cuDNN flash attention
    teacher_cfg = distill._teacher_cfg(cfg) if has_teacher else None
    return cfg, teacher_cfg


def _median(xs):
    return statistics.median(xs) if xs else None


def _time_model(name: str, args, sizes, precision: str) -> dict:
    import jax

    from jaxkd.bench import _jax_side as js

    label, preset, _, has_teacher, batches = CASES[name]
    col = 2 if args.device == "gpu" else (1 if args.quick else 0)
    batch = args.batch_size or batches[col]
    n_steps, rounds, warmup = sizes
    cfg, teacher_cfg = _configs(name, args, precision)
    mixing = cfg.data.augmentation.mixup.enabled or cfg.data.augmentation.cutmix.enabled
    host = js.make_batch(cfg, batch, mixing)
    t0 = time.perf_counter()
    jcase = js.JaxCase(cfg, teacher_cfg, host, scan=args.scan, donate=not args.no_donate)
    tcase = None
    if not args.no_torch and not args.torch_skipped:
        from jaxkd.bench._torch_side import TorchCase

        tcase = TorchCase(cfg, host["image"], host["label"], host.get("target"), teacher_cfg=teacher_cfg,
                          device="cuda" if args.device == "gpu" else "cpu", bf16=precision == "bfloat16")
    if warmup:
        jcase.steps(warmup)
        if tcase is not None:
            tcase.steps(warmup)
    setup_s = time.perf_counter() - t0
    k_jax = jcase.steps_per_call(n_steps)
    tj, tt, losses = [], [], {}
    for r in range(rounds):
        sides = [("jax", jcase, k_jax), ("torch", tcase, n_steps)]
        for side, case, k in (sides if r % 2 == 0 else sides[::-1]):
            if case is None:
                continue
            t = time.perf_counter()
            losses[side] = case.steps(k)
            (tj if side == "jax" else tt).append((time.perf_counter() - t) / k)
    for side, loss in losses.items():
        if loss != loss or abs(loss) == float("inf"):
            raise ValueError(f"{name}: the {side} step produced a non-finite loss ({loss})")
    mj, mt = _median(tj), _median(tt)
    flops = jcase.flops_per_step()
    res = {
        "model": label, "preset": f"configs/{preset}.py", "batch": batch, "params": jcase.num_params,
        "jaxkd_images_per_s": batch / mj, "torch_images_per_s": batch / mt if mt else None,
        "time_ratio": mj / mt if mt else None,
        "paired_ratio_median": _median([a / b for a, b in zip(tj, tt)]) if tt else None,
        "jaxkd_step_ms": 1e3 * mj, "torch_step_ms": 1e3 * mt if mt else None,
        "jaxkd_step_ms_rounds": [round(1e3 * t, 2) for t in tj],
        "torch_step_ms_rounds": [round(1e3 * t, 2) for t in tt],
        "steps_per_round": n_steps, "rounds": rounds, "warmup_steps": warmup,
        "jaxkd_compile_s": jcase.compile_s, "setup_s": setup_s, "flops_per_step": flops,
        "jaxkd_tflops_per_s": flops / mj / 1e12 if flops else None,
    }
    peak = js.peak_flops(jax.devices()[0].device_kind, precision)
    res["mfu"] = flops / mj / (peak * jax.device_count()) if flops and peak else None
    return res


def _run_here(args, n_host_devices: int) -> dict:
    import jax

    from jaxkd.bench import _jax_side as js

    if args.device == "gpu":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            raise ValueError("--device gpu: no GPU is visible to JAX (backend is "
                             f"{jax.default_backend()}); run on a machine with a CUDA GPU or use --device cpu")
    elif jax.default_backend() != "cpu":
        raise ValueError("--device cpu: jax was started on another backend in this process; run the benchmark "
                         "in a fresh process (or with JAX_PLATFORMS=cpu)")
    precision = args.precision or ("bfloat16" if args.device == "gpu" else "float32")
    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    js.apply_before([x for x in args.before.split(",") if x])
    if args.torch_omp_wait != "inherit" and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = args.torch_omp_wait.upper()  # read when torch's OpenMP starts
    cores = _cores()
    threads = args.threads or cores
    meta = {**js.device_info(), "host_devices": n_host_devices, "cores": cores, "xla_threads": cores,
            "device": args.device, "precision": precision, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "matmul_precision": args.matmul_precision or "default", "scan_steps_per_dispatch": args.scan,
            "donate_state": not args.no_donate, "before": args.before, "quick": bool(args.quick),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "loadavg_start": _loadavg()}
    args.torch_skipped = ""
    if not args.no_torch:
        from jaxkd.bench import _torch_side

        _torch_side.set_threads(threads)
        meta.update(_torch_side.versions())
        if args.device == "gpu" and not meta["torch_cuda"]:
            args.torch_skipped = meta["torch_skipped"] = "this torch build has no CUDA: jaxkd side only"
            print(f"note: {args.torch_skipped}", flush=True)
    counts = _COUNTS["gpu" if args.device == "gpu" else ("quick" if args.quick else "cpu")]
    sizes = (args.steps or counts[0], args.repeats or counts[1], counts[2] if args.warmup < 0 else args.warmup)
    print(f"jaxkd {meta['jax']} on {meta['devices']} x {meta['device_kind']} ({meta['backend']}, {precision}); "
          f"torch {meta.get('torch', '-')} with {meta.get('torch_threads', '-')} threads; "
          f"{sizes[0]} steps x {sizes[1]} rounds after {sizes[2]} warm-up", flush=True)
    results = {}
    for name in args.models.split(","):
        results[name] = _time_model(name, args, sizes, precision)
        r = results[name]
        print(f"  {name}: jaxkd {r['jaxkd_step_ms']:.1f} ms/step, torch "
              f"{r['torch_step_ms'] or float('nan'):.1f} ms/step (compile {r['jaxkd_compile_s']:.1f} s)", flush=True)
    meta["loadavg_end"] = _loadavg()
    print(format_table(results, meta))
    return {"meta": meta, "models": results}


def format_table(results: dict, meta: dict) -> str:
    head = f"{'model':<34} {'batch':>5} {'jaxkd img/s':>11} {'torch img/s':>11} {'time_ratio':>10}"
    if meta.get("device") == "gpu":
        head += f" {'TFLOP/s':>8} {'MFU':>6}"
    lines = [head, "-" * len(head)]
    for r in results.values():
        t = r["torch_images_per_s"]
        line = (f"{r['model']:<34} {r['batch']:>5} {r['jaxkd_images_per_s']:>11.1f} "
                f"{t if t is not None else float('nan'):>11.1f} {r['time_ratio'] or float('nan'):>10.2f}")
        if meta.get("device") == "gpu":
            line += f" {r['jaxkd_tflops_per_s'] or float('nan'):>8.1f} {r['mfu'] or float('nan'):>6.1%}"
        lines.append(line)
    lines.append(f"(time_ratio = jaxkd step time / torch_ref step time; {meta['host_devices']} XLA host device(s), "
                 f"{meta['precision']})")
    return "\n".join(lines)


def _print_comparison(results: list[dict]) -> None:
    names = list(results[0]["models"])
    head = f"{'model':<34}" + "".join(f" {'ratio @' + str(r['meta']['host_devices']) + ' dev':>13}" for r in results)
    print("\n" + head + "\n" + "-" * len(head))
    for n in names:
        print(f"{results[0]['models'][n]['model']:<34}" +
              "".join(f" {r['models'][n]['time_ratio'] or float('nan'):>13.2f}" for r in results))

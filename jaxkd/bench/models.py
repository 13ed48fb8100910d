"""``python -m jaxkd.bench [models] [--quick] [--device cpu|gpu] [--torch-modes ...] [--json FILE]``: training-step
throughput, jaxkd vs the best of several PyTorch settings, side by side in one run.

Models (same shapes, batch and data on both sides; fp32 and AdamW on CPU, bf16 on GPU):

=============  ===================================  ==========================  =====  =====  =====
name           what                                 preset                      CPU    quick  GPU
=============  ===================================  ==========================  =====  =====  =====
mnist_cnn      AdaptiveCNN 'mnist' (709 k params)   configs/mnist_cnn.py        128    16     1024
cifar_cnn      AdaptiveCNN 'cifar' (17.6 M)         configs/cifar_cnn.py [1]    64     8      2048
deit_tiny      DeiT-Tiny on CIFAR (4.34 M)          configs/deit_cifar.py [2]   64     8      1024
deit_kd        DeiT-Tiny KD, CIFAR CNN teacher      configs/deit_cifar.py       32     8      1024
=============  ===================================  ==========================  =====  =====  =====

[1] with ``training.optimizer=adamw`` (the preset trains with SGD; the benchmark compares AdamW on both sides).
[2] ``distillation.enabled=False``: both heads trained on the labels (jaxkd.tasks.Supervised).
The GPU batches are the original project's (CIFAR CNN 2048, DeiT-Tiny 1024).

The jaxkd side is the trainer's own step (:mod:`jaxkd.bench._jax_side`: ``steps.make_train_step`` with the
preset's task, optimiser, label smoothing, clipping, state donation and data sharding; on GPU
``training.use_amp=True, use_bf16=True`` and cuDNN flash attention). The torch side is the torch_ref models and
losses in every variant of ``--torch-modes`` (:mod:`jaxkd.bench._torch_side`: eager, channels_last, compile =
``torch.compile`` default mode, compile-max = ``mode="max-autotune"``), each with AdamW fused (CUDA) or foreach
(CPU), bf16 autocast on GPU (``--precision bfloat16`` on CPU), TF32 and ``cudnn.benchmark`` on GPU. Default
variants: eager, channels_last, compile (``--quick``: eager, channels_last); compile-max only when asked for (its
autotuning takes minutes). A variant that does not apply (channels_last without a CNN) or fails (torch.compile
without a working compiler, out of memory, a non-finite loss) is reported with its reason and the run goes on.

Timing: each side's first step (compilation: XLA's, or torch.compile's) and ``--warmup`` steps are untimed and
printed separately; then rounds, each timing ``--steps`` steps of every side in turn (the order reversing between
rounds, so drifting load on a shared machine hits all alike), each round ending when the results are ready
(``block_until_ready`` / a host float); at least ``--repeats`` rounds, and more until ``--budget-s`` seconds of
timing (per model) have passed. Step time = median over rounds; ``time_ratio`` = jaxkd step time / the BEST torch
variant's step time (< 1: jaxkd faster); every variant's time is listed. torch runs with as many intra-op threads
as the cores XLA uses. On GPU every model's jaxkd step compiles from the start in background threads (XLA
releases the GIL) while torch compiles in the main thread, all of them finished before the first timed round
(``--jax-compile serial``: each just before its model); the defaults (2 warm-up steps, rounds of 5 steps, 8 s of
timing per model, ``--max-total-s 170``) are meant to fit the four models into 3 minutes on one H200.
``--max-total-s`` shares what is left among the models still to run, leaves out torch.compile variants once 70 % of
it is spent (printed), and skips models once it is all spent (printed; 0 = no limit, the CPU default).

``--host-devices N|auto`` splits the CPU into N XLA devices (``--xla_force_host_platform_device_count``; auto = one
per core) and shards the batch over them, as the trainer does over its mesh; a list (``1,auto``) measures each
setting in its own process and reports them all. ``--device gpu`` adds MFU: XLA cost-analysis FLOPs per step x
steps/s over an ASSUMED peak, printed with the figures (:data:`jaxkd.bench._jax_side.PEAK_FLOPS`: 990 TFLOP/s dense
bf16 for H100/H200; cuDNN attention kernels count no FLOPs there, so DeiT's MFU is a slight underestimate); it stops
with an error without a GPU (torch is timed on CUDA when its build has CUDA, else skipped).

Experiments (for the performance report, never what the trainer runs): ``--scan K`` (K steps per dispatch),
``--no-donate``, ``--xla-flags``, ``--matmul-precision``, ``--torch-optim`` and ``--before`` (earlier
implementations of the same math, :data:`jaxkd.bench._jax_side.BEFORE`, to time a model-code change before vs
after). ``--torch-omp-wait passive`` (default) keeps torch's OpenMP threads from spinning: on a loaded host
spinning made the torch step several times slower and the comparison meaningless (BENCH.md).
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
from concurrent.futures import ThreadPoolExecutor

from jaxkd.bench._tables import format_table, print_comparison  # noqa: F401  (format_table: also the report's)
from jaxkd.config import ConfigError as UsageError  # bad options: one error: line, exit 2

DESCRIPTION = ("training-step images/s of jaxkd vs the best of several PyTorch settings (MNIST CNN, CIFAR CNN, "
               "DeiT-Tiny, DeiT-Tiny KD)")

#: name -> (label, preset, overrides, teacher?, default batch per (cpu, quick, gpu))
CASES = {
    "mnist_cnn": ("MNIST CNN", "mnist_cnn", [], False, (128, 16, 1024)),
    "cifar_cnn": ("CIFAR CNN", "cifar_cnn", ["--config.training.optimizer=adamw"], False, (64, 8, 2048)),
    "deit_tiny": ("DeiT-Tiny CIFAR", "deit_cifar", ["--config.distillation.enabled=False"], False, (64, 8, 1024)),
    "deit_kd": ("DeiT-Tiny KD (CIFAR CNN teacher)", "deit_cifar", [], True, (32, 8, 1024)),
}
# (steps per round, minimum rounds, warm-up steps, timing budget per model in s)
_COUNTS = {"cpu": (5, 5, 1, 0.0), "quick": (1, 3, 1, 0.0), "gpu": (5, 3, 2, 8.0)}
#: default torch variants (jaxkd.bench._torch_side.MODES) per setting
_MODES = {"cpu": "eager,channels_last,compile", "quick": "eager,channels_last", "gpu": "eager,channels_last,compile"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small batches, few steps (about 1-2 min on 2 cores)")
    p.add_argument("--device", default="cpu", help="cpu (fp32) or gpu (bf16 + cuDNN flash attention, MFU)")
    p.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--batch-size", type=int, default=0, help="one batch for every model (default: per model)")
    p.add_argument("--steps", type=int, default=0, help="steps timed per round and side")
    p.add_argument("--repeats", type=int, default=0, help="at least this many timed rounds (the median is reported)")
    p.add_argument("--budget-s", type=float, default=-1,
                   help="per model: keep timing rounds until this many seconds have passed (default 8 on GPU, "
                        "0 on CPU: --repeats rounds only); compilation and warm-up are not counted")
    p.add_argument("--max-total-s", type=float, default=-1,
                   help="the whole run's time: later models get what is left, torch.compile is left out after 70 %% "
                        "of it, models are skipped after all of it (default 170 on GPU, 0 = no limit on CPU)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed steps after compiling")
    p.add_argument("--torch-modes", default="",
                   help="torch variants, comma-separated, from eager, channels_last, compile, compile-max "
                        "(default: eager,channels_last,compile; --quick: eager,channels_last)")
    p.add_argument("--torch-optim", default="auto", help="AdamW implementation of the torch side: auto (fused on "
                   "CUDA, foreach on CPU), default (torch's choice, as torch_ref), foreach or fused")
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
    p.add_argument("--jax-compile", default="auto", choices=("auto", "background", "serial"),
                   help="background: every model's jaxkd step compiles in background threads from the start, "
                        "alongside torch's compilations; serial: each just before its model is timed (auto: "
                        "background on GPU, serial on CPU)")


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
            raise UsageError(f"--host-devices {spec!r}: use a positive count, 'auto', or a comma list such as 1,auto")
    return out


def _check_args(args) -> None:
    if args.device not in ("cpu", "gpu"):
        raise UsageError(f"--device {args.device!r}: use cpu or gpu")
    unknown = [m for m in args.models.split(",") if m not in CASES]
    if unknown or not args.models:
        raise UsageError(f"--models: unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
    if args.precision not in ("", "float32", "bfloat16"):
        raise UsageError(f"--precision {args.precision!r}: use float32 or bfloat16")
    for name in ("batch_size", "steps", "repeats", "threads"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.scan < 1:
        raise UsageError("--scan must be >= 1")
    from jaxkd.bench._torch_side import MODES, OPTIMS

    bad = [m for m in args.torch_modes.split(",") if m and m not in MODES]
    if bad:
        raise UsageError(f"--torch-modes: unknown {', '.join(bad)}; choose from {', '.join(MODES)}")
    if args.torch_optim not in OPTIMS:
        raise UsageError(f"--torch-optim {args.torch_optim!r}: choose from {', '.join(OPTIMS)}")
    if args.max_total_s < 0:
        args.max_total_s = 170.0 if args.device == "gpu" else 0.0
    from jaxkd.bench._jax_side import BEFORE

    bad = [x for x in args.before.split(",") if x and x not in BEFORE]
    if bad:
        raise UsageError(f"--before: unknown {', '.join(bad)}; choose from {', '.join(BEFORE)}")
    _host_device_settings(args.host_devices)


def _before(args) -> tuple[str, ...]:
    return tuple(x for x in args.before.split(",") if x)


def _xla_flags(n_devices: int, extra: str) -> str:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if n_devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={n_devices}")
    return " ".join(flags + [f for f in extra.split() if f not in flags])


def run(args) -> dict:
    """Entry point of the subcommand; returns the JSON figures."""
    _check_args(args)
    args.t_start = time.perf_counter()
    if args.device == "gpu":
        settings = [1]
        if "jax" not in sys.modules:  # torch shares the device: jax takes memory as it needs it, not 75 % up front
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
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
    print_comparison(results)
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
    from jaxkd.tasks import kd as distill

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


def _prepare(name: str, args, precision: str) -> dict:
    """Config, teacher config, host batch and batch size of one model."""
    from jaxkd.bench import _jax_side as js

    batches = CASES[name][4]
    col = 2 if args.device == "gpu" else (1 if args.quick else 0)
    batch = args.batch_size or batches[col]
    cfg, teacher_cfg = _configs(name, args, precision)
    mixing = cfg.data.augmentation.mixup.enabled or cfg.data.augmentation.cutmix.enabled
    return {"cfg": cfg, "teacher_cfg": teacher_cfg, "host": js.make_batch(cfg, batch, mixing), "batch": batch}


def _time_model(name: str, args, sizes, precision: str, modes: list[str], prep: dict, future=None,
                all_futures=()) -> dict:
    """Times one model. `future`: its JaxCase being built in a background thread (GPU), and `all_futures`: every
    model's, all finished before the first timed round so that no compilation runs while anything is timed."""
    import concurrent.futures

    import jax

    from jaxkd.bench import _jax_side as js

    label, preset = CASES[name][:2]
    n_steps, min_rounds, warmup, budget = sizes
    if args.max_total_s and budget:  # leave the models after this one their share of what is left
        left = args.max_total_s - (time.perf_counter() - args.t_start)
        budget = max(1.0, min(budget, left / (args.models_left + 1)))
    cfg, teacher_cfg, host, batch = prep["cfg"], prep["teacher_cfg"], prep["host"], prep["batch"]
    t0 = time.perf_counter()
    use_torch = not args.no_torch and not args.torch_skipped
    if use_torch and args.max_total_s and time.perf_counter() - args.t_start > 0.7 * args.max_total_s:
        late = [m for m in modes if m.startswith("compile")]
        modes = [m for m in modes if m not in late]  # compiling would overrun --max-total-s: say so, time the rest
        if late:
            print(f"  note: {name}: {', '.join(late)} not run (70 % of --max-total-s {args.max_total_s:g} s spent)",
                  flush=True)
    variants = {}
    if use_torch:
        from jaxkd.bench._torch_side import build_variants

        variants = build_variants(name, cfg, teacher_cfg, host, device="cuda" if args.device == "gpu" else "cpu",
                                  bf16=precision == "bfloat16", modes=modes, optim=args.torch_optim, warmup=warmup,
                                  compile_unavailable=args.compile_unavailable)
    if future is not None:
        jcase = future.result()
        concurrent.futures.wait(list(all_futures))
    else:
        jcase = js.make_case(prep, scan=args.scan, donate=not args.no_donate, before=_before(args))
    if warmup:
        jcase.steps(warmup)
    setup_s = time.perf_counter() - t0
    k_jax = jcase.steps_per_call(n_steps)
    sides = [("jaxkd", jcase, k_jax)] + [(m, v["case"], n_steps) for m, v in variants.items() if "case" in v]
    times: dict = {side: [] for side, _, _ in sides}
    max_rounds = 1000 if budget else min_rounds
    t_timing, rounds = time.perf_counter(), 0
    while True:
        for side, case, k in (sides if rounds % 2 == 0 else sides[::-1]):
            if side != "jaxkd" and "error" in variants[side]:
                continue
            t = time.perf_counter()
            try:
                loss = case.steps(k)
            except Exception as e:  # noqa: BLE001 -- a torch variant failing mid-way (e.g. out of memory)
                if side == "jaxkd":
                    raise
                from jaxkd.bench._torch_side import first_line

                variants[side]["error"] = first_line(e)
                continue
            times[side].append((time.perf_counter() - t) / k)
            if loss != loss or abs(loss) == float("inf"):
                if side == "jaxkd":
                    raise ValueError(f"{name}: the jaxkd step produced a non-finite loss ({loss})")
                variants[side]["error"] = f"non-finite loss ({loss})"
        rounds += 1
        if rounds >= max_rounds or _out_of_time(args):
            break
        if rounds >= min_rounds and time.perf_counter() - t_timing >= budget:
            break
    timing_s = time.perf_counter() - t_timing
    tj = times["jaxkd"]
    mj = _median(tj)
    per_variant = {}
    for mode, v in variants.items():
        rec = {k: v[k] for k in ("settings", "first_step_s", "error", "skipped") if k in v}
        ts = times.get(mode) or []
        if ts and "error" not in v:
            rec.update(step_ms=1e3 * _median(ts), step_ms_rounds=[round(1e3 * t, 2) for t in ts],
                       images_per_s=batch / _median(ts), time_ratio=mj / _median(ts))
        per_variant[mode] = rec
        v.pop("case", None)
    timed = {m: r for m, r in per_variant.items() if "step_ms" in r}
    best = min(timed, key=lambda m: timed[m]["step_ms"]) if timed else None
    mt = timed[best]["step_ms"] / 1e3 if best else None
    flops = jcase.flops_per_step()
    res = {
        "model": label, "preset": f"configs/{preset}.py", "batch": batch, "params": jcase.num_params,
        "jaxkd_images_per_s": batch / mj, "torch_images_per_s": batch / mt if mt else None,
        "time_ratio": mj / mt if mt else None, "torch_best": best,
        "paired_ratio_median": _median([a / b for a, b in zip(tj, times[best])]) if best else None,
        "jaxkd_step_ms": 1e3 * mj, "torch_step_ms": 1e3 * mt if mt else None,
        "jaxkd_step_ms_rounds": [round(1e3 * t, 2) for t in tj],
        "torch_step_ms_rounds": timed[best]["step_ms_rounds"] if best else [],
        "torch_variants": per_variant,
        "steps_per_round": n_steps, "rounds": rounds, "warmup_steps": warmup, "timing_s": timing_s,
        "jaxkd_compile_s": jcase.compile_s, "setup_s": setup_s, "flops_per_step": flops,
        "jaxkd_tflops_per_s": flops / mj / 1e12 if flops else None,
    }
    peak = js.peak_flops(jax.devices()[0].device_kind, precision)
    res["mfu"] = flops / mj / (peak * jax.device_count()) if flops and peak else None
    return res


def _out_of_time(args) -> bool:
    return bool(args.max_total_s) and time.perf_counter() - args.t_start >= args.max_total_s


def _run_here(args, n_host_devices: int) -> dict:
    import jax

    from jaxkd.bench import _jax_side as js

    if args.device == "gpu":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            raise UsageError("--device gpu: no GPU is visible to JAX (backend is "
                             f"{jax.default_backend()}); run on a machine with a CUDA GPU or use --device cpu")
    elif jax.default_backend() != "cpu":
        raise UsageError("--device cpu: jax was started on another backend in this process; run the benchmark "
                         "in a fresh process (or with JAX_PLATFORMS=cpu)")
    precision = args.precision or ("bfloat16" if args.device == "gpu" else "float32")
    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    if args.torch_omp_wait != "inherit" and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = args.torch_omp_wait.upper()  # read when torch's OpenMP starts
    cores = _cores()
    threads = args.threads or cores
    setting = "gpu" if args.device == "gpu" else ("quick" if args.quick else "cpu")
    modes = [m for m in (args.torch_modes or _MODES[setting]).split(",") if m]
    meta = {**js.device_info(), "host_devices": n_host_devices, "cores": cores, "xla_threads": cores,
            "device": args.device, "precision": precision, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "matmul_precision": args.matmul_precision or "default", "scan_steps_per_dispatch": args.scan,
            "donate_state": not args.no_donate, "before": args.before, "quick": bool(args.quick),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "loadavg_start": _loadavg(),
            "torch_modes": [] if args.no_torch else modes}
    peak = js.peak_flops(meta["device_kind"], precision)
    if peak:
        meta["assumed_peak_flops"] = peak
        meta["assumed_peak_source"] = js.peak_source(meta["device_kind"])
    args.torch_skipped = args.compile_unavailable = ""
    if not args.no_torch:
        from jaxkd.bench import _torch_side

        _torch_side.set_threads(threads)
        meta.update(_torch_side.versions())
        meta["torch_optim"] = _torch_side._optim_kind(args.torch_optim, "cuda" if args.device == "gpu" else "cpu")
        if args.device == "gpu" and not meta["torch_cuda"]:
            args.torch_skipped = meta["torch_skipped"] = "this torch build has no CUDA: jaxkd side only"
            print(f"note: {args.torch_skipped}", flush=True)
        elif args.device == "gpu":
            meta.update(_torch_side.set_gpu_flags())
        else:
            args.compile_unavailable = _torch_side.compiler_note()
    counts = _COUNTS[setting]
    sizes = (args.steps or counts[0], args.repeats or counts[1], counts[2] if args.warmup < 0 else args.warmup,
             counts[3] if args.budget_s < 0 else args.budget_s)
    print(f"jaxkd {meta['jax']} on {meta['devices']} x {meta['device_kind']} ({meta['backend']}, {precision}); "
          f"torch {meta.get('torch', '-')} with {meta.get('torch_threads', '-')} threads, variants "
          f"{','.join(meta['torch_modes']) or '-'} (AdamW {meta.get('torch_optim', '-')}); rounds of {sizes[0]} "
          f"steps, at least {sizes[1]}, for {sizes[3]:g} s per model, after {sizes[2]} warm-up", flush=True)
    results = {}
    names = args.models.split(",")
    preps = {name: _prepare(name, args, precision) for name in names}
    futures, pool = {}, None
    background = args.jax_compile == "background" or (args.jax_compile == "auto" and args.device == "gpu")
    if background and not args.no_torch and not args.torch_skipped:
        # every model's XLA compilation in the background (XLA releases the GIL), alongside torch's compilations
        pool = ThreadPoolExecutor(min(4, len(names)))
        futures = {name: pool.submit(js.make_case, preps[name], scan=args.scan, donate=not args.no_donate,
                                  before=_before(args))
                   for name in names}
        meta["jaxkd_compile"] = "all models in background threads, alongside torch's compilation"
    for i, name in enumerate(names):
        args.models_left = len(names) - i - 1
        if _out_of_time(args):
            results[name] = {"model": CASES[name][0], "skipped": f"--max-total-s {args.max_total_s:g} reached"}
            print(f"  {name}: skipped ({results[name]['skipped']})", flush=True)
            continue
        results[name] = r = _time_model(name, args, sizes, precision, modes, preps[name], futures.get(name),
                                        futures.values())
        tv = ", ".join(f"{m} {v['step_ms']:.1f}" if "step_ms" in v else f"{m} {'n/a' if 'skipped' in v else 'failed'}"
                       for m, v in r["torch_variants"].items())
        comp = ", ".join(f"{m} {v['first_step_s']:.1f} s" for m, v in r["torch_variants"].items()
                         if "first_step_s" in v)
        print(f"  {name}: jaxkd {r['jaxkd_step_ms']:.1f} ms/step; torch {tv or '-'} ms/step; best "
              f"{r['torch_best'] or '-'}; {r['rounds']} rounds in {r['timing_s']:.1f} s; compile/first step: "
              f"jaxkd {r['jaxkd_compile_s']:.1f} s{', torch ' + comp if comp else ''}", flush=True)
        if args.json:  # partial figures, so that a run stopped from outside still leaves what it measured
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "models": results, "partial": True}, f, indent=2)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    meta["loadavg_end"] = _loadavg()
    meta["total_s"] = time.perf_counter() - args.t_start
    print(format_table(results, meta))
    return {"meta": meta, "models": results}

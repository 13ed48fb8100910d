"""``python -m jaxkd.bench writers``: what a logged metrics row costs the training thread, metrics.jsonl alone vs
metrics.jsonl and TensorBoard, and metrics.jsonl and Weights & Biases (offline; when wandb is installed), side by
side in one run (jaxkd.train.writers).

The trainer logs one row every ``training.log_every_steps`` steps and otherwise waits on the device, so the rows are
written ``--gap-ms`` apart (default 20) and each ``write`` call is timed on the calling thread: with a sink it
only enqueues, and the records are built and written on the sink's own thread. The final ``flush`` (once, at the
end of a run) is reported too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DESCRIPTION = "cost per logged metrics row on the training thread: metrics.jsonl alone vs with TensorBoard / W&B"

ROW = {"loss": 2.3, "accuracy": 0.1, "lr": 1e-3, "grad_norm": 1.5, "kd_loss": 0.7, "images_per_s": 1234.5}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=300, help="rows written per writer (default 300)")
    p.add_argument("--gap-ms", type=float, default=20.0, help="time between rows (default 20 ms)")


def _time_rows(writer, rows: int, gap_s: float) -> float:
    took = []
    for i in range(rows):
        t = time.perf_counter()
        writer.write("train", i, i / 10, **ROW)
        took.append(time.perf_counter() - t)
        time.sleep(gap_s)
    return statistics.median(took)


def _offline_wandb(writers, d: Path):
    """A W&B sink in offline mode whatever WANDB_MODE says (a benchmark uploads nothing)."""
    import os

    old = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        return writers.WandbWriter(d, project="jaxkd-bench", entity="", name="bench", run_id="bench", flat_config={})
    finally:
        if old is None:
            del os.environ["WANDB_MODE"]
        else:
            os.environ["WANDB_MODE"] = old


def run(args) -> dict:
    from jaxkd.train import reporting, writers

    gap = args.gap_ms / 1e3
    res = {"rows": args.rows, "gap_ms": args.gap_ms, "scalars_per_row": len(ROW)}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        res["jsonl_us_per_row"] = _time_rows(reporting.MetricWriter(d / "a.jsonl"), args.rows, gap) * 1e6
        sinks = {"tensorboard": lambda: writers.TensorBoardWriter(d / "tb")}
        try:
            import wandb  # noqa: F401
        except ImportError:
            print("wandb is not installed (pip install -e '.[wandb]'): W&B not measured")
        else:
            sinks["wandb"] = lambda: _offline_wandb(writers, d)
        for name, make in sinks.items():
            sink = make()
            res[f"with_{name}_us_per_row"] = _time_rows(
                reporting.MetricWriter(d / f"{name}.jsonl", sinks=[sink]), args.rows, gap) * 1e6
            t = time.perf_counter()
            sink.flush()
            res[f"{name}_final_flush_ms"] = (time.perf_counter() - t) * 1e3
            sink.close()
            res[f"{name}_ratio"] = res[f"with_{name}_us_per_row"] / res["jsonl_us_per_row"]
    cols = " | ".join(f"+ {n} {res[f'with_{n}_us_per_row']:.0f} us (ratio {res[f'{n}_ratio']:.2f}, final flush "
                      f"{res[f'{n}_final_flush_ms']:.1f} ms)" for n in sinks if f"{n}_ratio" in res)
    print(f"per logged row ({len(ROW)} scalars) on the training thread, median of {args.rows}: metrics.jsonl "
          f"{res['jsonl_us_per_row']:.0f} us | {cols}")
    return res

"""``python -m jaxkd.bench writers``: what a logged metrics row costs the training thread, metrics.jsonl alone vs
metrics.jsonl and TensorBoard (jaxkd.train.writers), side by side in one run.

The trainer logs one row every ``training.log_every_steps`` steps and otherwise waits on the device, so the rows are
written ``--gap-ms`` apart (default 20) and each ``write`` call is timed on the calling thread: with TensorBoard it
only enqueues, and the events are built and written on the writer's own thread. The final ``flush`` (once, at the
end of a run) is reported too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DESCRIPTION = "cost per logged metrics row on the training thread: metrics.jsonl alone vs with TensorBoard"

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


def run(args) -> dict:
    from jaxkd.train import reporting, writers

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        plain = _time_rows(reporting.MetricWriter(d / "a.jsonl"), args.rows, args.gap_ms / 1e3)
        tb = writers.TensorBoardWriter(d / "tb")
        with_tb = _time_rows(reporting.MetricWriter(d / "b.jsonl", sinks=[tb]), args.rows, args.gap_ms / 1e3)
        t = time.perf_counter()
        tb.flush()
        flush = time.perf_counter() - t
        tb.close()
    res = {"rows": args.rows, "gap_ms": args.gap_ms, "scalars_per_row": len(ROW),
           "jsonl_us_per_row": plain * 1e6, "with_tensorboard_us_per_row": with_tb * 1e6,
           "ratio": with_tb / plain, "final_flush_ms": flush * 1e3}
    print(f"per logged row ({len(ROW)} scalars) on the training thread, median of {args.rows}: metrics.jsonl "
          f"{res['jsonl_us_per_row']:.0f} us | + TensorBoard {res['with_tensorboard_us_per_row']:.0f} us | ratio "
          f"{res['ratio']:.2f}; final flush {res['final_flush_ms']:.1f} ms")
    return res

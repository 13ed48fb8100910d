"""`python -m jaxkd.study --jobs N`: the scheduler of concurrent runs, on stand-in jobs (a few lines of Python each
instead of a trainer, so the whole file runs in seconds): at most N at once, each pinned to its own CPUs, a student
only after its teacher finished, a failed teacher's students skipped, a signal passed on to every run.
The real study through the CLI with --jobs 2 is tests/test_study.py's `full` phase."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jaxkd.study import runner
from jaxkd.study.suites import Run, StudyError

# A stand-in run: records start/end time and its CPU affinity, sleeps, then "finishes" (writes summary.json), or
# exits 3 when told to fail.
_CHILD = """
import json, os, sys, time
d, secs, fail = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
t0 = time.time()
cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
time.sleep(secs)
json.dump({"start": t0, "end": time.time(), "cpus": cpus,
           "mem": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")}, open(os.path.join(d, "trace.json"), "w"))
if fail:
    sys.exit(3)
json.dump({"test_accuracy": 0.5}, open(os.path.join(d, "summary.json"), "w"))
"""


@dataclass
class FakeJob:
    run: Run
    seed: int
    workdir: Path
    teacher: tuple[str, int] | None = None
    secs: float = 0.4
    fail: bool = False
    status: str = "new"
    spec: str = "stand-in"
    selected: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.run.name}/seed{self.seed}"

    def command(self, python: str, force: bool = False) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return [python, "-c", _CHILD, str(self.workdir), str(self.secs), "1" if self.fail else "0"]

    def summary(self):
        p = self.workdir / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def refresh(self) -> str:
        self.status = "finished" if (self.workdir / "summary.json").exists() else "new"
        return self.status

    def trace(self) -> dict:
        return json.loads((self.workdir / "trace.json").read_text())


def _jobs(tmp: Path, *, teacher_fails: bool = False) -> list[FakeJob]:
    t = FakeJob(Run("t", "x", "teacher"), 0, tmp / "t0", secs=0.8, fail=teacher_fails)
    out = [t]
    for s in range(2):
        out.append(FakeJob(Run("s", "x", "distilled", twin="b", teacher="t"), s, tmp / f"s{s}", teacher=("t", 0)))
        out.append(FakeJob(Run("b", "x", "baseline"), s, tmp / f"b{s}"))
    return out


def _execute(tmp: Path, jobs, parallel: int):
    lines: list[str] = []
    ledger = runner.Ledger(tmp / "study.json")
    failed: set[str] = set()
    code = runner._execute(jobs, jobs, ledger, tmp, dict(os.environ), False, lines.append, failed, parallel)
    return code, lines, failed, ledger


def _overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_cpu_groups_split_the_cores_disjointly():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cpus = os.sched_getaffinity(0)
    for n in range(1, len(cpus) + 1):
        groups = runner.cpu_groups(n)
        if n == 1:
            assert groups == [None]  # one run at a time: not pinned, it uses every core
            continue
        assert len(groups) == n and set().union(*groups) == cpus
        assert sum(len(g) for g in groups) == len(cpus)  # disjoint
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert runner.cpu_groups(len(cpus) + 1) == [None] * (len(cpus) + 1)  # more runs than cores: not pinned


def test_parallel_runs_wait_for_their_teacher_and_are_pinned(tmp_path):
    jobs = _jobs(tmp_path)
    code, lines, failed, ledger = _execute(tmp_path, jobs, parallel=2)
    assert code == 0 and not failed, lines
    traces = {j.key: j.trace() for j in jobs}
    t = traces["t/seed0"]
    for s in ("s/seed0", "s/seed1"):
        assert traces[s]["start"] >= t["end"], "a student started before its teacher finished"
    assert _overlap(t, traces["b/seed0"])  # the baseline trains beside the teacher
    # never more than two at once
    events = sorted([(v["start"], 1) for v in traces.values()] + [(v["end"], -1) for v in traces.values()])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak == 2
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        groups = [set(g) for g in runner.cpu_groups(2)]
        assert all(set(v["cpus"]) in groups for v in traces.values())
        assert set(t["cpus"]) != set(traces["b/seed0"]["cpus"])  # concurrent runs on different cores
    assert all(v["mem"] == "0.450" for v in traces.values())  # each its share of one accelerator's memory
    assert sum(": done in" in x for x in lines) == 5 and "2 at a time" in lines[0]
    assert all(ledger.runs[j.key]["rc"] == 0 for j in jobs)


def test_one_at_a_time_is_sequential_and_unpinned(tmp_path):
    jobs = _jobs(tmp_path)
    code, lines, _, _ = _execute(tmp_path, jobs, parallel=1)
    assert code == 0
    traces = [j.trace() for j in jobs]
    assert not any(_overlap(a, b) for i, a in enumerate(traces) for b in traces[i + 1:])
    assert [x.split(":")[0] for x in lines if "training" in x] == [f"[{i}/5] {j.key}" for i, j in enumerate(jobs, 1)]
    if hasattr(os, "sched_getaffinity"):
        assert all(set(t["cpus"]) == os.sched_getaffinity(0) for t in traces)
    assert all(t["mem"] is None or t["mem"] == os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION") for t in traces)


def test_failed_teacher_skips_its_students_and_the_rest_go_on(tmp_path):
    jobs = _jobs(tmp_path, teacher_fails=True)
    code, lines, failed, ledger = _execute(tmp_path, jobs, parallel=2)
    assert code == 0  # run_study turns `failed` into exit 1
    assert failed == {"t/seed0", "s/seed0", "s/seed1"}
    assert sum("skipped: its teacher t/seed0 has not finished" in x for x in lines) == 2
    assert any("t/seed0: FAILED (exit 3)" in x for x in lines)
    assert (tmp_path / "b1" / "summary.json").exists() and not (tmp_path / "s0" / "trace.json").exists()
    assert ledger.runs["t/seed0"]["rc"] == 3 and "s/seed0" not in ledger.runs


def test_a_signal_reaches_every_running_run_and_nothing_new_starts(tmp_path):
    jobs = _jobs(tmp_path)
    for j in jobs:
        j.secs = 30.0
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.time()
    try:
        code, lines, _, _ = _execute(tmp_path, jobs, parallel=2)
    finally:
        timer.cancel()
    assert code == 128 + signal.SIGTERM
    assert time.time() - t0 < 20  # both runs stopped at once, not after their 30 s
    assert sum("training" in x for x in lines) == 2  # the two that were running; nothing started after


def test_jobs_below_one_is_refused(tmp_path):
    with pytest.raises(StudyError, match="--jobs must be at least 1"):
        runner.run_study(runner.get_suite("quickstart"), tmp_path / "q", seeds=1, smoke=True, parallel=0,
                         out=lambda m: None)


def test_cli_refuses_jobs_zero(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "jaxkd.study", "quickstart", "--workdir", str(tmp_path / "q"),
                        "--jobs", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "--jobs" in r.stderr
    assert not (tmp_path / "q").exists()

"""Several real processes through jax.distributed (localhost, one CPU device each): a run whose periodic save, best
save and final export fall on the same steps finishes with the same parameters, bit for bit, as one process over the
same two-device mesh; a checkpoint write that fails on one process stops every process at once with one `error:`
line each (no five-minute shutdown hang); SIGTERM to either process makes both save the same step and exit 0; after
each the same command resumes and finishes with those parameters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import ROOT, TINY_VIT

# save_frequency 1: epoch 1 writes a periodic and a best checkpoint of step 3 (the first validation is always a
# new best), epoch 2 a periodic one of step 6 followed at once by the final export.
COINCIDING = [*TINY_VIT, "--config.logging.save_frequency=1"]

HARNESS = Path(__file__).with_name("_fault_harness.py")  # jaxkd.train with injected faults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(n: int, workdir: Path, args: list[str], faults: dict | None = None):
    """Starts `n` processes of one run through the fault harness."""
    port, procs = _free_port(), []
    for pid in range(n):
        env = dict(os.environ, JAXKD_COORDINATOR=f"127.0.0.1:{port}", JAXKD_NUM_PROCESSES=str(n),
                   JAXKD_PROCESS_ID=str(pid), **(faults or {}))
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, str(HARNESS), "--config", "configs/quickstart.py",
                                       "--workdir", str(workdir), *args], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait(procs, timeout: float = 300):
    """[(returncode, stdout, stderr)] of every process; all are killed if one overruns `timeout`."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def _launch(n: int, workdir: Path, args: list[str], faults: dict | None = None,
            timeout: float = 300):
    """Runs `n` processes of one run to the end; returns [(returncode, stdout, stderr)]."""
    return _wait(_start(n, workdir, args, faults), timeout)


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


@pytest.fixture(scope="module")
def one_process_two_devices(tmp_path_factory):
    """The reference: one process over a mesh of two (simulated) CPU devices, the same global batch."""
    workdir = tmp_path_factory.mktemp("mp") / "ref"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-m", "jaxkd.train", "--config", "configs/quickstart.py", "--workdir",
                        str(workdir), *COINCIDING], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return _summary(workdir)


def test_two_processes_with_coinciding_saves_match_one_process(one_process_two_devices, tmp_path):
    """Process 1 writes its best checkpoints slowly, so that process 0's periodic save of step 3 overlaps the best
    save of step 3 (without their own barrier names: 'Barrier _async_write_complete.3 is already ongoing')."""
    workdir = tmp_path / "multi"
    results = _launch(2, workdir, COINCIDING, {"FAULT_SLOW_BEST": "1"})
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    # the collision this guards against: a periodic and a best save of the same step, then the export
    assert (workdir / "checkpoints" / "3").is_dir() and (workdir / "checkpoints_best" / "3").is_dir()
    assert (workdir / "checkpoints" / "6").is_dir() and (workdir / "model").is_dir()
    s = _summary(workdir)
    assert s["processes"] == 2 and s["devices"] == 2 and one_process_two_devices["devices"] == 2
    assert s["params_sha256"] == one_process_two_devices["params_sha256"]
    assert s["test_loss"] == one_process_two_devices["test_loss"]

    # The newest checkpoint damaged: process 0 alone moves it aside (the others wait at a barrier), all resume
    # from step 3 and end where they did.
    for f in (workdir / "checkpoints" / "6").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")
    results = _launch(2, workdir, COINCIDING)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "checkpoints/6 is corrupt or incomplete" in results[0][2]
    assert "corrupt" not in results[1][2]
    assert "resuming from step 3" in results[0][1]
    assert (workdir / "corrupt_checkpoints" / "6").is_dir()
    assert _summary(workdir)["params_sha256"] == one_process_two_devices["params_sha256"]


def test_failed_save_on_one_process_stops_all_then_resumes(one_process_two_devices, tmp_path):
    workdir = tmp_path / "multi"
    # process 1 cannot write the step-6 checkpoint: the run must stop at once, on both processes
    mark = tmp_path / "fault_time"
    results = _launch(2, workdir, COINCIDING, {"FAULT_OSERROR": "6:1:28", "FAULT_MARK": str(mark)})
    stop_s = time.time() - float(mark.read_text())  # from the failed write until both processes had exited
    (rc0, _, err0), (rc1, _, err1) = results
    assert (rc0, rc1) == (1, 1), (err0[-2000:], err1[-2000:])
    line = [ln for ln in err1.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "process 1 of 2: could not write checkpoint step 6" in line[0], err1[-2000:]
    assert "no space left on device" in line[0] and str(workdir / "checkpoints") in line[0]
    assert any(ln.startswith("error: process 0 of 2:") for ln in err0.splitlines()), err0[-2000:]
    assert stop_s < 60, f"the processes took {stop_s:.0f} s to stop after the failed write"  # a hang: 300 s
    assert not (workdir / "summary.json").exists()
    assert (workdir / "checkpoints" / "3").is_dir()  # the earlier checkpoint is intact ...
    results = _launch(2, workdir, COINCIDING)  # ... and the same command resumes from it
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "resuming from step 3" in results[0][1]
    assert _summary(workdir)["params_sha256"] == one_process_two_devices["params_sha256"]


def _train_steps_logged(workdir: Path) -> int:
    f = workdir / "metrics.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []
    return max((r["step"] for r in rows if r["kind"] == "train"), default=0)


@pytest.mark.parametrize("signalled", [1])
def test_sigterm_to_one_process_stops_all_at_one_step_then_resumes(signalled, one_process_two_devices, tmp_path):
    """SIGTERM to one process: every process saves the same step and exits 0 within seconds; the same command
    resumes to the uninterrupted run's parameters. (Process 1 receives it, the harder case: process 0, which
    writes the checkpoint's metadata, learns of it through the collective. The fault campaign, `python -m
    jaxkd.faults --processes 2`, signals both.)"""
    workdir = tmp_path / "multi"
    args = [*COINCIDING, "--config.training.log_every_steps=1"]
    procs = _start(2, workdir, args, {"FAULT_SLEEP_S": "0.5"})  # slow steps: a window to signal in
    t0 = time.time()
    while _train_steps_logged(workdir) < 2:
        assert all(p.poll() is None for p in procs), "the run ended before the signal"
        assert time.time() - t0 < 240, "step 2 never reached"
        time.sleep(0.05)
    procs[signalled].send_signal(signal.SIGTERM)
    t_signal = time.time()
    results = _wait(procs, timeout=120)
    stop_s = time.time() - t_signal
    stopped = []
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
        line = [ln for ln in err.splitlines() if ln.startswith("stopped by signal 15")]
        assert len(line) == 1, err[-3000:]
        stopped.append(int(line[0].split(" at step ")[1].split(":")[0]))
    print(f"signal to process {signalled}: both stopped at step {stopped} {stop_s:.1f} s after the signal")
    assert stopped[0] == stopped[1] and (workdir / "checkpoints" / str(stopped[0])).is_dir()
    assert "received by another process" in results[1 - signalled][2]
    assert not (workdir / "summary.json").exists()
    results = _launch(2, workdir, args)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert f"resuming from step {stopped[0]}" in results[0][1]
    assert _summary(workdir)["params_sha256"] == one_process_two_devices["params_sha256"]


def test_sigkill_of_process_0_stops_its_peer_then_the_rerun_resumes(one_process_two_devices, tmp_path):
    """kill -9 of process 0 mid-training (no handler runs: the coordinator itself is gone): process 1 fails within
    seconds instead of hanging in a collective; the same command on both resumes from the last checkpoint and ends
    with the uninterrupted run's parameters. (The seeded sample of `python -m jaxkd.faults --processes 2`.)"""
    workdir = tmp_path / "multi"
    args = [*COINCIDING, "--config.training.log_every_steps=1"]
    procs = _start(2, workdir, args, {"FAULT_SLEEP_S": "0.5"})
    t0 = time.time()
    while _train_steps_logged(workdir) < 4 or not (workdir / "checkpoints" / "3").is_dir():
        assert all(p.poll() is None for p in procs), "the run ended before the kill"
        assert time.time() - t0 < 240, "step 4 never reached"
        time.sleep(0.05)
    procs[0].kill()
    t_kill = time.time()
    rc_peer = procs[1].wait(timeout=120)
    peer_s = time.time() - t_kill
    _wait(procs, timeout=5)
    print(f"process 0 killed after step {_train_steps_logged(workdir)}; process 1 exited {rc_peer} after "
          f"{peer_s:.1f} s")
    assert rc_peer != 0 and peer_s < 60
    assert not (workdir / "summary.json").exists()
    results = _launch(2, workdir, args)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "resuming from step" in results[0][1]
    assert _summary(workdir)["params_sha256"] == one_process_two_devices["params_sha256"]

"""Runs get killed; the same command again loses nothing.

A reference run goes uninterrupted; other runs of the same config are killed (kill -9 mid-epoch, between epochs,
during a checkpoint save; SIGTERM) and restarted until they finish: their final parameters must be bit-identical
(params_sha256). Also: a workdir with a different config is refused unless --force; a corrupt newest checkpoint is
reported and the previous one used; a checkpoint saved on 8 devices resumes on 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tiny ViT on the embedded digits: 3 epochs x 4 steps, a checkpoint every epoch, metrics every step.
ARGS = ["--config", "configs/quickstart.py", "--config.model.model_type=deit", "--config.vit.variant=custom",
        "--config.vit.img_size=8", "--config.vit.patch_size=2", "--config.vit.embed_dim=32", "--config.vit.depth=2",
        "--config.vit.num_heads=2", "--config.vit.distillation=false", "--config.vit.inference_mode=cls",
        "--config.vit.drop_path_rate=0.1", "--config.data.batch_size=16", "--config.training.num_epochs=3",
        "--config.training.max_steps_per_epoch=4", "--config.training.warmup_epochs=1",
        "--config.training.log_every_steps=1", "--config.logging.save_frequency=1",
        "--config.logging.progress_bar=false", "--config.training.use_swa=true",
        "--config.training.swa_start_epoch=0.5"]
SLEEP = {"FAULT_SLEEP_S": "0.4"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")  # later runs reuse the compiled steps: faster restarts
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


HARNESS = Path(__file__).with_name("_fault_harness.py")  # jaxkd.train; FAULT_SLEEP_S slows its steps


def _cmd(workdir, *extra):
    return [sys.executable, str(HARNESS), *ARGS, "--workdir", str(workdir), *extra]


def _finish(workdir, env, *extra) -> subprocess.CompletedProcess:
    r = subprocess.run(_cmd(workdir, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _sha(workdir) -> tuple[str, str]:
    """The final and the SWA parameters' SHA-256 (SWA averages at every epoch end: a resume that skipped an
    epoch's end-of-epoch work would change it, not the final parameters)."""
    s = json.loads((Path(workdir) / "summary.json").read_text())
    return s["params_sha256"], s["swa_params_sha256"]


def _steps_logged(workdir) -> int:
    f = Path(workdir) / "metrics.jsonl"
    if not f.exists():
        return 0
    rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return max((r["step"] for r in rows if r["kind"] == "train"), default=0)


def _val_logged(workdir, step: int) -> bool:
    f = Path(workdir) / "metrics.jsonl"
    return f.exists() and any(json.loads(x)["kind"] == "val" and json.loads(x)["step"] == step
                              for x in f.read_text().splitlines() if x.strip())


def _start_and_kill(workdir, env, *extra, when, sig=signal.SIGKILL, timeout=300) -> int:
    """Starts a run, waits until `when(workdir)` is true, sends `sig`; returns the exit code."""
    p = subprocess.Popen(_cmd(workdir, *extra), cwd=ROOT, env=dict(env, **SLEEP), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not when(workdir):
        if p.poll() is not None:
            raise AssertionError(f"run ended before the kill point: {p.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            p.kill()
            raise AssertionError("kill point never reached")
        time.sleep(0.01)
    p.send_signal(sig)
    p.wait(timeout=120)
    return p.returncode


@pytest.fixture(scope="module")
def finished(tmp_path_factory, env) -> Path:
    """The uninterrupted run's workdir (read only: copy it to change it)."""
    workdir = tmp_path_factory.mktemp("reference")
    _finish(workdir, env)
    return workdir


@pytest.fixture(scope="module")
def reference(finished):
    return _sha(finished)


# A kill during a save (and in the SWA BatchNorm pass and the export) is tests/test_faults.py's sample of the
# fault campaign; a kill mid-epoch after a checkpoint is test_host_placement_killed_... and the SIGTERM tests below.
KILL_POINTS = {
    "mid-epoch-1": lambda w: _steps_logged(w) >= 2,
    "between-epochs": lambda w: _val_logged(w, 4) and _steps_logged(w) == 4,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill9_then_rerun_is_bit_identical(point, reference, env, tmp_path):
    code = _start_and_kill(tmp_path, env, when=KILL_POINTS[point])
    assert code == -signal.SIGKILL
    killed_at = _steps_logged(tmp_path)
    r = _finish(tmp_path, env)
    assert "names a run that is no longer running" in r.stderr  # the killed run's lock, taken over
    print(f"{point}: killed after step {killed_at}; restart printed: "
          f"{[line for line in r.stdout.splitlines() if 'resuming' in line]}")
    assert _sha(tmp_path) == reference


def test_host_placement_killed_and_rerun_ends_on_the_device_runs_parameters(reference, env, tmp_path):
    """The images on the host (each batch's rows read by the host, augmented on the device) give the same batches
    as the default device copy: killed mid-epoch and rerun, the run ends bit-identical to the reference."""
    host = "--config.data.placement=host"
    assert _start_and_kill(tmp_path, env, host, when=lambda w: _steps_logged(w) >= 6) == -signal.SIGKILL
    _finish(tmp_path, env, host)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["placement"] == "host"
    assert _sha(tmp_path) == reference


def test_sigterm_saves_and_exits_then_resumes(reference, env, tmp_path):
    code = _start_and_kill(tmp_path, env, when=lambda w: _steps_logged(w) >= 6, sig=signal.SIGTERM)
    assert code == 0  # saved and stopped: a success (as every process of a multi-process run)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] >= 6 and saved[-1] % 4 != 0  # a mid-epoch checkpoint, written on SIGTERM
    r = _finish(tmp_path, env)
    assert f"resuming from step {saved[-1]}" in r.stdout
    assert _sha(tmp_path) == reference


def test_sigterm_on_an_epochs_last_step_finishes_the_epoch_first(reference, env, tmp_path):
    """Signalled during step 8, the last of epoch 2: the run validates, averages (SWA, from epoch 2 on) and then
    saves step 8, so that the resumed run, which starts at epoch 3, has missed nothing."""
    code = _start_and_kill(tmp_path, env, when=lambda w: _steps_logged(w) >= 7, sig=signal.SIGTERM)
    assert code == 0
    assert _val_logged(tmp_path, 8)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == 8
    r = _finish(tmp_path, env)
    assert "resuming from step 8" in r.stdout
    assert _sha(tmp_path) == reference


def test_second_run_on_a_live_workdir_is_refused(reference, env, tmp_path):
    """One workdir, one run: a second jaxkd.train is refused at once (exit 2, the holder named) and the first,
    untouched, goes on; stopped and resumed it still ends bit-identical. (4 s a step: the first run must still be
    training when the two refused runs, each a whole CLI start on a loaded machine, are over.)"""
    p = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=dict(env, FAULT_SLEEP_S="4"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while _steps_logged(tmp_path) < 2:
            assert p.poll() is None and time.time() - t0 < 300, "the first run never reached step 2"
            time.sleep(0.05)
        for extra in ([], ["--force"]):  # --force must not move a live run aside either
            second = subprocess.run(_cmd(tmp_path, *extra), cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert second.returncode == 2, second.stderr[-2000:]
            errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and f"is in use by a running jaxkd.train (pid {p.pid} on host" in errors[0]
        assert p.poll() is None and _steps_logged(tmp_path) < 12, "the first run was disturbed (or ended)"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    finally:
        p.kill()
    assert not list(tmp_path.glob("replaced-*"))
    r = _finish(tmp_path, env)
    assert "no longer running" not in r.stderr  # released on a clean exit
    assert _sha(tmp_path) == reference


def test_corrupt_newest_checkpoint_falls_back(reference, env, tmp_path):
    """Also what a crash leaves beside it: a half-written step folder, a cut-off last line of metrics.jsonl, a
    stale temporary file. The rerun repairs each, says so, and ends bit-identical."""
    _start_and_kill(tmp_path, env, when=lambda w: (Path(w) / "checkpoints" / "8").is_dir() and _steps_logged(w) >= 9)
    newest = tmp_path / "checkpoints" / "8"
    for f in newest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")
    partial = tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp-1765000000000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "d").write_bytes(b"\0" * 100)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 10, "epo')
    (tmp_path / ".status.json.tmp").write_text('{"pha')
    r = _finish(tmp_path, env)
    assert f"note: removed {partial}, a checkpoint a killed run left half-written" in r.stderr, r.stderr[-2000:]
    assert "dropped 1 partly written line(s)" in r.stderr and not partial.exists()
    assert "checkpoints/8 is corrupt or incomplete" in r.stderr
    assert "resuming from step 4" in r.stdout
    assert _sha(tmp_path) == reference


def test_different_config_refused_unless_force(finished, env, tmp_path):
    import shutil

    shutil.rmtree(tmp_path)
    shutil.copytree(finished, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run(_cmd(tmp_path, "--config.training.learning_rate=0.5"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "holds a run with a different config: training.learning_rate" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing touched
    _finish(tmp_path, env, "--config.training.learning_rate=0.5", "--force")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "12").is_dir()  # the old run is kept, moved aside


def test_resume_on_fewer_devices(env, tmp_path):
    """A checkpoint written with the batch split over 8 devices restores onto 1 device and finishes."""
    eight = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                                "--xla_cpu_collective_call_terminate_timeout_seconds=900")
    _start_and_kill(tmp_path, eight, when=lambda w: (Path(w) / "checkpoints" / "4").is_dir() and _steps_logged(w) >= 5)
    r = _finish(tmp_path, env)
    assert "resuming from step" in r.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["devices"] == 1 and summary["steps"] == 12


def test_best_checkpoint_left_by_a_killed_run_is_replaced(tmp_path):
    """A run killed after a best save of step 8 but before its periodic save of step 8 resumes from step 4, and
    saves a best step 8 again: the old one is replaced (Orbax alone raises StepAlreadyExistsError; found by
    `python -m jaxkd.faults`)."""
    import jax.numpy as jnp

    from jaxkd.train.checkpoint import Checkpoints

    ckpts = Checkpoints(tmp_path)
    ckpts.save(8, {"w": jnp.ones(3)}, {"epoch": 2}, best=True)
    ckpts.wait()
    ckpts.close()
    ckpts = Checkpoints(tmp_path)  # the resumed run
    ckpts.save(8, {"w": jnp.zeros(3)}, {"epoch": 2}, best=True)
    ckpts.wait()
    assert ckpts.best.all_steps() == [8]
    assert float(ckpts.best.restore(8).state["w"].sum()) == 0.0
    ckpts.close()

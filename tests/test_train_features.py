"""The trainer's features end to end (in-process `jaxkd.train.loop.train`, a tiny ViT on the embedded digits, a few
steps each): bf16 and fp16 precision, EMA, SWA, early stopping, reduce-on-plateau, per-step schedules, label
smoothing, gradient accumulation, MixUp, the non-finite-loss stop, the CLI's exit code 2 on bad input, and the
parameter counts `python -m jaxkd.summary` prints for the presets.

Every run logs every step (log_every_steps=1), so metrics.jsonl holds each step's loss and learning rate. The first
step's loss depends only on the initial weights, the first batch, the compute precision and the loss (not on the
optimiser or schedule), so runs are compared with the fp32 reference run through it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxkd import config as config_lib
from jaxkd.train import loop as train_lib

ROOT = Path(__file__).resolve().parents[1]
LR = 2e-3  # configs/quickstart.py's learning rate
# tests/test_train.py's tiny ViT (one block: compile time dominates these runs), 2 epochs x 3 steps.
TINY_VIT = ["--config.model.model_type=deit", "--config.vit.variant=custom", "--config.vit.img_size=8",
            "--config.vit.patch_size=2", "--config.vit.embed_dim=32", "--config.vit.depth=1",
            "--config.vit.num_heads=2", "--config.vit.distillation=false", "--config.vit.inference_mode=cls",
            "--config.vit.drop_path_rate=0.0", "--config.data.batch_size=16", "--config.training.num_epochs=2",
            "--config.training.max_steps_per_epoch=3", "--config.training.warmup_epochs=1",
            "--config.logging.progress_bar=false", "--config.training.log_every_steps=1"]
T = "--config.training."


@pytest.fixture(scope="module", autouse=True)
def _no_plots():
    """The PNG plots (about a second of matplotlib per run) are tests/test_train.py's business, not these runs'."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_lib.reporting, "plot_training_curves", lambda *a, **k: None)
        mp.setattr(train_lib.reporting, "plot_confusion_matrix", lambda *a, **k: None)
        yield


def _train(workdir: Path, *overrides: str):
    """(summary, train rows, val rows) of a tiny-ViT run with the given overrides."""
    cfg = config_lib.load("configs/quickstart.py", [*TINY_VIT, *overrides])
    summary = train_lib.train(cfg, workdir)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "val"]


def _report(workdir: Path) -> dict:
    return json.loads((workdir / "report.json").read_text())


def _finite(rows) -> bool:
    return all(math.isfinite(r["loss"]) for r in rows)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fp32 reference run, with EMA on (EMA does not touch the training trajectory)."""
    workdir = tmp_path_factory.mktemp("ema")
    summary, train, val = _train(workdir, T + "ema.enabled=true", T + "ema.decay=0.5")
    return workdir, summary, train, val


def test_ema_reports_its_own_evaluation(reference):
    workdir, summary, train, val = reference
    assert len(train) == 6 and _finite(train)
    assert 0.0 <= summary["ema_test_accuracy"] <= 1.0 and 0.0 <= summary["ema_val_accuracy"] <= 1.0
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["ema_test_accuracy"] == summary["ema_test_accuracy"] and "swa_test_accuracy" not in on_disk
    report = _report(workdir)
    assert set(report) == {"final", "ema"}
    # The EMA weights are not the final weights ...
    assert abs(report["ema"]["val"]["loss"] - report["final"]["val"]["loss"]) > 1e-6
    # ... and the per-epoch validation (early stopping, plateau, best accuracy) runs on them.
    assert val[-1]["loss"] == pytest.approx(report["ema"]["val"]["loss"], abs=1e-6)
    assert summary["test_accuracy"] == report["final"]["test"]["accuracy"]


def test_bf16_run_finishes_with_finite_loss(reference, tmp_path):
    _, _, ref, _ = reference
    summary, train, _ = _train(tmp_path, T + "use_amp=true", T + "use_bf16=true")
    assert config_lib.precision(config_lib.load("configs/quickstart.py", [T + "use_amp=true"])) == "bfloat16"
    assert _finite(train) and math.isfinite(summary["test_loss"]) and len(train) == 6
    assert "loss_scale" not in train[0]  # bf16 needs no loss scaling
    d = abs(train[0]["loss"] - ref[0]["loss"])
    print(f"bf16 vs fp32 first-step loss: {train[0]['loss']:.6f} vs {ref[0]['loss']:.6f} (diff {d:.1e})")
    assert 0.0 < d < 0.05  # same weights and batch, computed in bf16: close, not bit-equal


def test_fp16_run_uses_dynamic_loss_scaling(reference, tmp_path):
    # vit.attention=plain: the default fused attention cannot compile in fp16 on CPU (see the xfail test below).
    _, _, ref, _ = reference
    summary, train, _ = _train(tmp_path, T + "use_amp=true", T + "use_bf16=false", "--config.vit.attention=plain")
    assert _finite(train) and math.isfinite(summary["test_loss"]) and len(train) == 6
    assert [r["loss_scale"] for r in train] == [2.0 ** 15] * 6  # no overflow in 6 steps: the scale stays
    d = abs(train[0]["loss"] - ref[0]["loss"])
    print(f"fp16 vs fp32 first-step loss: {train[0]['loss']:.6f} vs {ref[0]['loss']:.6f} (diff {d:.1e})")
    assert 0.0 < d < 0.05


def test_fp16_default_attention_compiles_on_cpu():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxkd import models

    cfg = config_lib.load("configs/quickstart.py", [*TINY_VIT, T + "use_amp=true", T + "use_bf16=false"])
    model = models.build(cfg, nnx.Rngs(0))
    model.eval()
    gd, state = nnx.split(model)
    out = jax.jit(lambda s, x: nnx.merge(gd, s)(x))(state, jnp.zeros((2, 8, 8, 1), jnp.float32))
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))


def _linear_step(monkeypatch, *, fp16: bool, ema: float | None = None, growth: int = 2):
    """A jitted jaxkd train step on a 2 -> 1 nnx.Linear whose loss is sum(model(image)); SGD at lr 0.1."""
    import jax
    import optax
    from flax import nnx

    from jaxkd.train import steps

    monkeypatch.setattr(steps, "FP16_GROWTH_INTERVAL", growth)  # read when the step is traced
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    gd, _, params, rest = steps.split_model(model)
    tx = optax.sgd(0.1)
    state = steps.init_state(params, rest, tx, 0, swa=False, ema=ema is not None, fp16=fp16)
    task = lambda m, batch, epoch, aux=None: (jax.numpy.sum(m(batch["image"])), {})  # noqa: E731
    step = steps.make_train_step(gd, task, tx, steps_per_epoch=10, schedule=lambda c: 0.1, ema_decay=ema)
    return state, step


def test_fp16_loss_scale_halves_on_overflow_and_skips_the_step(monkeypatch):
    """Dynamic loss scaling (torch.cuda.amp.GradScaler semantics): an overflowing step leaves the weights alone and
    halves the scale; finite steps update and, after the growth interval (2 here), double it."""
    import jax
    import jax.numpy as jnp

    state, step = _linear_step(monkeypatch, fp16=True)
    w0 = np.asarray(jax.tree.leaves(state.params)[1])  # kernel (2, 1)
    assert w0.shape == (2, 1)
    huge = {"image": jnp.full((1, 2), 1e35, jnp.float32)}  # gradient 1e35 · 2^15 overflows float32
    ok = {"image": jnp.ones((1, 2), jnp.float32)}
    state, m = step(state, huge)
    assert float(m["loss_scale"]) == 2.0 ** 15 and float(state.loss_scale) == 2.0 ** 14
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(state.params)[1]), w0)
    state, _ = step(state, ok)
    w1 = np.asarray(jax.tree.leaves(state.params)[1])
    np.testing.assert_allclose(w1, w0 - 0.1, rtol=1e-6)  # d sum(Wx + b)/dW = x = 1, unscaled exactly
    assert float(state.loss_scale) == 2.0 ** 14 and int(state.good_steps) == 1
    state, _ = step(state, ok)
    assert float(state.loss_scale) == 2.0 ** 15 and int(state.good_steps) == 0


def test_skip_nonfinite_updates_drops_and_counts_them(monkeypatch):
    """training.skip_nonfinite_updates=2 (optax.apply_if_finite): a NaN gradient leaves the weights as they were and
    is counted; the guard's 'params_finite' stays 1; a third NaN in a row is applied, and 'params_finite' says so."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxkd.train import steps

    model_gd, _, params, rest = steps.split_model(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
    tx = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=2)
    state = steps.init_state(params, rest, tx, 0, swa=False, ema=False, fp16=False)
    task = lambda m, batch, epoch, aux=None: (jnp.sum(m(batch["image"])), {})  # noqa: E731
    step = steps.make_train_step(model_gd, task, tx, steps_per_epoch=10, schedule=lambda c: 0.1)
    w0 = np.asarray(jax.tree.leaves(state.params)[1])
    nan, ok = {"image": jnp.full((1, 2), jnp.nan)}, {"image": jnp.ones((1, 2))}
    for count in (1, 2):
        state, m = step(state, nan)
        assert float(m["skipped_updates"]) == count and float(m["params_finite"]) == 1.0
        np.testing.assert_array_equal(np.asarray(jax.tree.leaves(state.params)[1]), w0)
    state, m = step(state, ok)
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(state.params)[1]), w0 - 0.1, rtol=1e-6)
    for _ in range(3):  # the limit: the third NaN in a row goes through
        state, m = step(state, nan)
    assert float(m["params_finite"]) == 0.0 and float(m["skipped_updates"]) == 5  # (optax counts the applied one)


def test_exploding_weights_stop_the_run_before_any_bad_checkpoint_or_export(tmp_path):
    """learning rate 1e6 (a user's typo): the numerics guard stops the run with exit 2 and one line naming the step
    and the fixes; every checkpoint on disk is from before the blow-up, nothing is exported. (Before the guard this run
    exited 0 with NaN validation and test losses and an exported model that predicted NaN.)"""
    work = tmp_path / "w"
    r = subprocess.run([sys.executable, "-m", "jaxkd.train", "--config", "configs/quickstart.py", "--workdir",
                        str(work), *TINY_VIT, T + "learning_rate=1e6", "--config.logging.save_frequency=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("first step")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("error: non-finite ") and "lower training.learning_rate (now 1e+06)" in lines[0]
    assert not (work / "model").exists() and not (work / "summary.json").exists()
    bad_step = int(lines[0].split(" step ")[1].split(";")[0].split()[0])
    saved = [int(d.name) for d in (work / "checkpoints").iterdir() if d.name.isdigit()]
    assert all(s < bad_step for s in saved), (saved, lines[0])  # every checkpoint is from before the blow-up


def test_ema_update_is_decay_weighted(monkeypatch):
    import jax

    state, step = _linear_step(monkeypatch, fp16=False, ema=0.75)
    p0 = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    state, _ = step(state, {"image": np.ones((1, 2), np.float32)})
    p1 = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    for e, a, b in zip(jax.tree.leaves(state.ema_params), p0, p1):
        np.testing.assert_allclose(np.asarray(e), 0.75 * a + 0.25 * b, rtol=1e-6)


def test_swa_averages_from_half_way_at_swa_lr(tmp_path):
    """swa_start_epoch 0.5 of 2 epochs: epoch 1 runs at swa_lr and its end is the only snapshot, so the averaged
    model is the final one (the ViT has no BatchNorm to recompute): same test loss."""
    summary, train, _ = _train(tmp_path, T + "use_swa=true", T + "swa_start_epoch=0.5", T + "swa_lr=5e-4")
    assert [r["lr"] for r in train] == pytest.approx([LR] * 3 + [5e-4] * 3, rel=1e-6)
    assert 0.0 <= summary["swa_test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["swa_test_accuracy"] == summary["swa_test_accuracy"]
    report = _report(tmp_path)
    assert report["swa"]["test"]["loss"] == pytest.approx(report["final"]["test"]["loss"], abs=1e-6)
    assert report["swa"]["test"]["accuracy"] == report["final"]["test"]["accuracy"]


def test_early_stopping_stops_before_num_epochs(tmp_path, capsys):
    summary, train, val = _train(tmp_path, T + "num_epochs=3", T + "max_steps_per_epoch=1",
                                 T + "early_stopping.enabled=true", T + "early_stopping.patience=1",
                                 T + "early_stopping.min_delta=1e9")
    # Epoch 1 improves on +inf; epoch 2 cannot improve by 1e9: stop after 2 of 3 epochs.
    assert summary["stopped_early"] is True
    assert summary["epochs"] == 2 < 3 and summary["steps"] == 2 and len(val) == 2
    assert json.loads((tmp_path / "summary.json").read_text())["stopped_early"] is True
    assert "early stopping after epoch 2" in capsys.readouterr().out


def test_plateau_scheduler_reduces_the_learning_rate(tmp_path):
    """At lr 1e-9 the validation loss cannot improve by the relative 1e-4: with patience 0 the second epoch's
    validation cuts the rate by factor 0.1 for the third epoch (ReduceLROnPlateau semantics)."""
    summary, train, val = _train(tmp_path, T + "scheduler=plateau", T + "learning_rate=1e-9", T + "warmup_epochs=0",
                                 T + "lr_scheduler_params.patience=0", T + "lr_scheduler_params.factor=0.1",
                                 T + "num_epochs=3", T + "max_steps_per_epoch=1")
    assert [r["lr"] for r in train] == pytest.approx([1e-9, 1e-9, 1e-10], rel=1e-6)
    assert abs(val[1]["loss"] - val[0]["loss"]) <= 1e-4 * val[0]["loss"]
    assert summary["epochs"] == 3 and _finite(train)


def test_per_step_schedule_and_label_smoothing(reference, tmp_path):
    """schedule_unit=step: after the 1-epoch warm-up the cosine over the remaining epoch moves every step,
    η_max·(1 + cos(π·k/3))/2 for k = 0, 1, 2. Label smoothing 0 (against the reference's 0.1) changes the loss
    of the very first step (same weights, same batch)."""
    _, _, ref, _ = reference
    summary, train, _ = _train(tmp_path, T + "schedule_unit=step", T + "label_smoothing=0.0")
    expected = [LR * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
    assert [r["lr"] for r in train[3:]] == pytest.approx(expected, rel=1e-6)
    assert len({r["lr"] for r in train[:3]}) == 3  # the warm-up moves per step too
    assert _finite(train) and summary["steps"] == 6
    # Smoothing changes the loss by ε·(mean_k(−log p_k) − CE), small for the near-uniform initial predictions
    # (~1e-3 here) but far above the float32 noise of the same step (runs of one config agree bit for bit).
    d = abs(train[0]["loss"] - ref[0]["loss"])
    print(f"label smoothing 0 vs 0.1, first-step loss: {train[0]['loss']:.6f} vs {ref[0]['loss']:.6f} ({d:.1e})")
    assert d > 1e-5


def test_gradient_accumulation_steps(tmp_path):
    """Accumulation 2: the 3 micro-steps of an epoch are cut to 2 (a whole number of optimiser steps), so 2
    epochs are 4 micro-steps and 2 optimiser steps. Per-step cosine without warm-up over those 2 optimiser steps:
    lr, lr/2, each shared by the two micro-steps of one optimiser step."""
    summary, train, _ = _train(tmp_path, T + "gradient_accumulation_steps=2", T + "schedule_unit=step",
                               T + "warmup_epochs=0")
    assert summary["steps"] == 4 and summary["epochs"] == 2
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["lr"] for r in train] == pytest.approx([LR, LR, LR / 2, LR / 2], rel=1e-6)
    assert _finite(train)


def test_mixup_runs_on_soft_targets(reference, tmp_path):
    _, _, ref, _ = reference
    summary, train, _ = _train(tmp_path, "--config.data.augmentation.mixup.enabled=true")
    assert _finite(train) and math.isfinite(summary["test_loss"]) and len(train) == 6
    assert abs(train[0]["loss"] - ref[0]["loss"]) > 1e-3  # mixed images and targets: a different first loss


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    """SGD at lr 1e30 without clipping: step 1 is finite, its update blows the weights up, step 2's loss is not."""
    cfg = config_lib.load("configs/quickstart.py", [*TINY_VIT, T + "optimizer=sgd", T + "learning_rate=1e30",
                                                    T + "gradient_clip_val=0.0"])
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2\b"):
        train_lib.train(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1] and math.isfinite(rows[0]["loss"])
    assert not (tmp_path / "summary.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# The CLI on bad input: exit code 2, one line, nothing written


def _cli(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxkd.train", "--config", "configs/quickstart.py",
                           "--workdir", str(workdir), *TINY_VIT, *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,message", [
    (T + "optimizer=lion", "config field 'training.optimizer' = 'lion' must be one of"),
    ("--config.data.source=npz:/nonexistent.npz", "npz:/nonexistent.npz: file not found"),
], ids=["bad-config", "bad-data"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, override, message):
    missing, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for workdir in (missing, empty) if "data" in override else (missing,):
        r = _cli(workdir, override)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
    assert not missing.exists()
    assert list(empty.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# python -m jaxkd.summary


@pytest.mark.parametrize("preset,total", [("mnist_cnn", "709,034"), ("cifar_cnn", "17,629,514"),
                                          ("deit_cifar", "4,340,660"), ("vit_cifar", "4,338,346"),
                                          ("deit_mnist", "3,923,639")])
def test_summary_total_params(preset, total, capsys):
    from jaxkd import summary

    assert summary.main(["--config", f"configs/{preset}.py"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"total params: {total}"
    # The total is the sum of the listed parameter rows.
    rows = [int(x.split()[-1].replace(",", "")) for x in lines[3:] if x.split() and x.split()[-1][:1].isdigit()
            and not x.startswith(("non-trainable", "total"))]
    assert sum(rows) == int(total.replace(",", ""))
    assert np.all(np.array(rows) > 0)


def test_tf32_sets_the_default_matmul_precision(tmp_path, monkeypatch):
    """training.use_tf32 (torch's allow_tf32) -> jax_default_matmul_precision 'tensorfloat32'; otherwise 'float32',
    so fp32 stays fp32 on GPUs whose XLA default is TF32 (no effect on CPU). One process starts two runs (TF32 on,
    then off), so each run must set it, not inherit it; each run is stopped where its model would be built (what
    follows does not read the setting again), and the process's setting is put back afterwards."""
    import jax

    class Built(Exception):
        pass

    seen = []

    def stop_at_build(*args, **kwargs):
        seen.append(jax.config.jax_default_matmul_precision)
        raise Built

    monkeypatch.setattr(train_lib.models, "build", stop_at_build)
    before = jax.config.jax_default_matmul_precision
    try:
        for i, tf32 in enumerate(("true", "false")):
            cfg = config_lib.load("configs/quickstart.py", [*TINY_VIT, f"{T}use_tf32={tf32}"])
            with pytest.raises(Built):
                train_lib.train(cfg, tmp_path / f"w{i}")
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    assert seen == ["tensorfloat32", "float32"]


def test_a_new_mode_is_one_module_and_one_registry_entry(reference, tmp_path, monkeypatch):
    """tests/_toy_task.py (a Task subclass the trainer has never heard of) trains once it has an entry in
    jaxkd.tasks.TASKS: its loss term and metrics reach metrics.jsonl, its eval_metrics the validation rows."""
    from jaxkd import tasks

    monkeypatch.setattr(tasks, "TASKS", {"toy": "_toy_task:ToyTask", **tasks.TASKS})  # tried first
    summary, train, val = _train(tmp_path, "--config.experiment_name=toy-task")
    assert len(train) == 6 and _finite(train)
    assert all(0.0 <= r["toy_entropy"] <= math.log(10) + 1e-5 for r in train)
    assert val and all(0.0 <= r["toy_correct"] <= 1.0 for r in val)  # (sums become means over the split)
    # negative control: the same trainer without the entry (the reference run) logs none of it
    assert not any("toy_entropy" in r for r in reference[2]) and not any("toy_correct" in r for r in reference[3])


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard (issue 21 item 1) and the profile of a real run (item 3)

def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_tensorboard_holds_every_metrics_row(reference):
    """The reference run's event files, read back with TensorBoard's own reader: every numeric value of every
    metrics.jsonl row under KIND/NAME at its step (float32, as TensorBoard stores it), the config, the first
    augmented batch, the final test numbers and the hyper-parameters with the results."""
    workdir, summary, train, val = reference
    ea = _events(workdir / "tensorboard")
    tags = ea.Tags()
    expected = {}
    for row in train + val:
        for k, v in row.items():
            if k not in ("kind", "step") and isinstance(v, (int, float)):
                expected[(f"{row['kind']}/{k}", row["step"])] = float(v)
    assert {t for t, _ in expected} <= set(tags["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "val/accuracy"} <= set(tags["scalars"])
    got = {(t, e.step): e.value for t in tags["scalars"] for e in ea.Scalars(t)}
    for key, v in expected.items():
        assert got[key] == pytest.approx(v, rel=1e-6, abs=1e-30), key
    assert len([e for e in ea.Scalars("train/loss")]) == len(train)  # one event per row, no more
    assert got[("test/accuracy", train[-1]["step"])] == pytest.approx(summary["test_accuracy"])
    assert got[("test/ema_accuracy", train[-1]["step"])] == pytest.approx(summary["ema_test_accuracy"])
    assert "train/augmented_batch" in tags["images"]
    img = ea.Images("train/augmented_batch")[0]
    assert img.step == 0 and img.width > 8 and img.height > 8
    assert "config/text_summary" in tags["tensors"]
    text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n")) == json.loads((workdir / "config.json").read_text())
    assert set(ea.PluginTagToContent("hparams")) >= {"_hparams_/experiment", "_hparams_/session_start_info"}


def _wandb_records(run_dir: Path) -> tuple[list[dict], dict, dict, str, str]:
    """(history rows, summary, config, project, run id) of an offline W&B run, read from its run-ID.wandb file with
    W&B's own record protobuf (wandb.proto.wandb_internal_pb2.Record). The file is W&B's 7-byte header (':W&B',
    magic, version), then a LevelDB log: 32 KiB blocks of chunks (crc32c, length, type: 1 whole, 2 first, 3 middle,
    4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    rows, summary, config, run, pos, block, parts = [], {}, {}, None, 7, 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # (a block's tail too short for a chunk header is padding)
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        parts = [chunk] if kind in (1, 2) else [*parts, chunk]
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        rec.ParseFromString(b"".join(parts))
        if rec.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
        elif rec.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in rec.summary.update if i.key})
        elif rec.WhichOneof("record_type") == "run":
            run = rec.run
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    return rows, summary, config, run.project, run.run_id


def test_tensorboard_off_wandb_and_a_profile_leave_the_results_unchanged(reference, tmp_path, monkeypatch):
    """logging.profile_steps=[2, 4] records a jax.profiler trace of steps 2..3 into WORKDIR/profile (an .xplane.pb
    for TensorBoard's profile plugin / xprof); logging.wandb=true logs to an offline W&B run in WORKDIR/wandb, read
    back here record by record: every numeric value of every metrics.jsonl row under KIND/NAME at its step, the
    first batch's image, the final numbers, the config. With both, and with TensorBoard off, the run ends with the
    reference run's parameters bit for bit."""
    monkeypatch.delenv("WANDB_MODE", raising=False)  # (offline: jaxkd's default)
    summary, train, val = _train(tmp_path, T + "ema.enabled=true", T + "ema.decay=0.5",
                                 "--config.logging.tensorboard=false", "--config.logging.profile_steps=[2, 4]",
                                 "--config.logging.wandb=true", "--config.logging.wandb_project=jaxkd-tests")
    assert summary["params_sha256"] == reference[1]["params_sha256"]
    assert list((tmp_path / "profile").rglob("*.xplane.pb")), sorted(p.name for p in tmp_path.rglob("*"))
    assert not (tmp_path / "tensorboard").exists()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith("-" + (tmp_path / "wandb_run_id").read_text().strip())
    rows, final, config, project, run_id = _wandb_records(run_dir)
    got = {}
    for r in rows:
        got.update({(k, r["_step"]): v for k, v in r.items() if not k.startswith("_")})
    for row in train + val:
        for k, v in row.items():
            if k not in ("kind", "step") and isinstance(v, (int, float)):
                assert got[(f"{row['kind']}/{k}", row["step"])] == pytest.approx(v, rel=1e-12), (row, k)
    assert got[("train/augmented_batch/_type", 0)] == "image-file"
    assert got[("test/accuracy", train[-1]["step"])] == pytest.approx(summary["test_accuracy"])
    assert got[("test/ema_accuracy", train[-1]["step"])] == pytest.approx(summary["ema_test_accuracy"])
    assert final["hparams/test_accuracy"] == pytest.approx(summary["test_accuracy"])
    flat = config_lib.flatten(json.loads((tmp_path / "config.json").read_text()))
    assert {k: v for k, v in config.items() if k in flat} == json.loads(json.dumps(flat))
    assert (project, run_id) == ("jaxkd-tests", (tmp_path / "wandb_run_id").read_text().strip())

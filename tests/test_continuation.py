"""Continuing an original run in jaxkd and handing it back: ``convert from-torch --resume`` (an original training
checkpoint -> a workdir ``jaxkd.train`` resumes at the next epoch) and ``convert to-torch --original / --optimizer``
(the original's checkpoint format, which its load_checkpoint -- torch_ref.optim.load_checkpoint -- accepts).

The numerics of the continuation (the next steps against torch's) are in
parity_tests/test_continuation_parity.py; here: the parameter order, the files and state the import writes (moments,
step counts, SWA average, history), the trainer resuming it in-process, and the round trip back to torch (bit-exact
optimiser state). Model: a tiny DeiT on the embedded digits (conv stem with BatchNorm, channel_expand), 2 steps an
epoch, 3 epochs, SWA from epoch 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from jaxkd import config as config_lib
from jaxkd import convert
from jaxkd.interop import original_run as orig
from jaxkd.interop.fit import expected_layout
from jaxkd.interop.state_dict import param_tree_to_torch
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import continuation
from jaxkd.train import loop as train_lib
from torch_ref import optim as torch_optim
from torch_ref.cnn import AdaptiveCNN as TorchCNN
from torch_ref.vit import DeiT as TorchDeiT

ROOT = Path(__file__).resolve().parents[1]
SPE = 2
ARCH = dict(img_size=8, patch_size=2, in_channels=1, num_classes=10, embed_dim=16, depth=1, num_heads=2,
            mlp_ratio=2.0, drop_path_rate=0.0, use_conv_stem=True, distillation=False, inference_mode="cls")
ARGS = ["--config.model.model_type=deit", "--config.vit.variant=custom", "--config.vit.img_size=8",
        "--config.vit.patch_size=2", "--config.vit.embed_dim=16", "--config.vit.depth=1", "--config.vit.num_heads=2",
        "--config.vit.mlp_ratio=2.0", "--config.vit.use_conv_stem=true", "--config.vit.distillation=false",
        "--config.vit.inference_mode=cls", "--config.vit.drop_path_rate=0.0", "--config.data.batch_size=16",
        "--config.training.num_epochs=3", f"--config.training.max_steps_per_epoch={SPE}",
        "--config.training.use_swa=true", "--config.training.swa_start_epoch=0.34",  # SWA from epoch index 1
        "--config.logging.progress_bar=false"]


def _cfg():
    return config_lib.load("configs/quickstart.py", ARGS)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(torch model, its AveragedModel, the original's checkpoint_epoch_2.pth): 2 epochs of 2 AdamW steps in torch,
    the SWA average updated after the second epoch, as the original's training loop does."""
    tmp = tmp_path_factory.mktemp("original")
    t = _cfg().training
    torch.manual_seed(0)
    tm = TorchDeiT(**ARCH)
    opt, sched = torch_optim.make_optimizer(tm, optimizer="adamw", lr=t.learning_rate, weight_decay=t.weight_decay,
                                            warmup_epochs=t.warmup_epochs, num_epochs=t.num_epochs)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(rng.normal(size=(16, 1, 8, 8)).astype(np.float32)),
                torch.from_numpy(rng.integers(0, 10, 16))) for _ in range(2 * SPE)]
    torch_optim.train_steps(tm, batches, opt=opt, sched=sched, steps_per_epoch=SPE, label_smoothing=0.1)
    swa = torch.optim.swa_utils.AveragedModel(tm)
    swa.update_parameters(tm)
    path = tmp / "checkpoint_epoch_2.pth"
    torch_optim.save_checkpoint(path, tm, opt, sched, epoch=1, swa_model=swa, best_val_acc=31.5,
                                metrics_history={"train_loss": [2.4, 2.3], "train_acc": [10.0, 12.5],
                                                 "val_loss": [2.35, 2.25], "val_acc": [20.0, 31.5]})
    return tm, swa, path


@pytest.fixture(scope="module")
def imported(original, tmp_path_factory):
    _, _, path = original
    out = tmp_path_factory.mktemp("imported") / "work"
    lines = []
    convert.from_torch("configs/quickstart.py", path, out, ARGS, resume=True, log=lines.append)
    return out, lines


def _restore(workdir: Path):
    _, _, _, target = continuation.fresh_state(_cfg(), SPE)
    ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
    try:
        return ckpts.restore_newest_good(target)
    finally:
        ckpts.close()


def test_parameter_order_is_torch_named_parameters():
    """The optimiser's indices follow model.parameters(): the state dict's order less its buffers (both
    architectures, every block kind); original_key_order gives the original's state-dict order from any order."""
    deit = dict(ARCH, distillation=True, depth=2)
    for tm, args in ((TorchDeiT(**deit), ARGS + ["--config.vit.distillation=true", "--config.vit.depth=2",
                                                 "--config.vit.inference_mode=avg"]),
                     (TorchCNN("mnist", 1, 10), [])):
        shapes, params = expected_layout(config_lib.load("configs/quickstart.py", args))
        sd = tm.state_dict()
        assert set(shapes) == set(sd) and params == {n for n, _ in tm.named_parameters()}
        assert orig.parameter_order(sd, params) == [n for n, _ in tm.named_parameters()]
        assert orig.original_key_order(sorted(sd)) == list(sd)


def test_original_key_order_follows_peer_checkpoints():
    """The registration order against the original's own listing (PEER_CHECKPOINTS.md, every model it lists)."""
    spec = ROOT.parent / "shared" / "spec" / "PEER_CHECKPOINTS.md"
    if not spec.is_file():
        pytest.skip(f"{spec} not found")
    blocks = re.findall(r"```\n(.*?)```", spec.read_text(), re.S)
    assert len(blocks) == 4
    for block in blocks:
        keys = [line.split()[0] for line in block.splitlines() if line and not line.startswith("(")]
        assert orig.original_key_order(sorted(keys)) == keys


def test_import_writes_the_trainers_state(original, imported):
    tm, swa, path = original
    out, lines = imported
    assert "jaxkd.train resumes it at epoch 3 of 3 (step 4, 2 steps an epoch)" in lines[0]
    for name in ("config.json", "data.json", "metrics.jsonl", "converted_from.json"):
        assert (out / name).is_file(), name
    step, state, host = _restore(out)
    assert step == 4 and int(state.step) == 4
    assert host["epoch"] == 2 and host["best_val_accuracy"] == pytest.approx(0.315)
    moments, adam_count, sched_count = continuation.opt_moments(state.opt_state)
    assert adam_count == 4 and sched_count == 4
    sd = torch.load(path, weights_only=False)  # (the test's own file)
    opt_sd = sd["optimizer_state_dict"]
    names = [n for n, _ in tm.named_parameters()]
    for name, tree in moments.items():  # every moment through the parameter's layout conversion, bit-exact
        got = param_tree_to_torch(tree)
        for i, key in enumerate(names):
            np.testing.assert_array_equal(got[key], opt_sd["state"][i][name].numpy(), err_msg=f"{name} {key}")
    assert int(state.swa_count) == 1
    avg = param_tree_to_torch(state.swa_params)
    for key, value in swa.module.state_dict().items():
        if key in avg:
            np.testing.assert_array_equal(avg[key], value.numpy(), err_msg=key)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"], r["source"]) for r in rows] == [
        ("train", 2, "original"), ("val", 2, "original"), ("train", 4, "original"), ("val", 4, "original")]
    assert rows[3]["accuracy"] == pytest.approx(0.315)


def test_to_torch_original_format_round_trip(original, imported, tmp_path):
    """to-torch --optimizer of the imported run gives back the original's checkpoint: the same model keys (in order)
    and shapes, the optimiser state bit for bit; torch_ref's load_checkpoint (the original's) takes it and trains."""
    tm, _, path = original
    out, _ = imported
    rt = tmp_path / "checkpoint_epoch_2.pth"
    assert convert.main(["to-torch", "--workdir", str(out), "--out", str(rt), "--optimizer"]) == 0
    back = torch.load(rt, weights_only=True)  # plain tensors and values: loads without any safe globals
    first = torch.load(path, weights_only=False)
    assert back["epoch"] == 1 and back["best_val_acc"] == pytest.approx(31.5)
    assert list(back["model_state_dict"]) == list(tm.state_dict())
    assert {k: v.shape for k, v in back["model_state_dict"].items()} == {k: v.shape for k, v in tm.state_dict().items()}
    a, b = back["optimizer_state_dict"], first["optimizer_state_dict"]
    assert a["state"].keys() == b["state"].keys()
    for i in b["state"]:
        for name, value in b["state"][i].items():
            assert torch.equal(a["state"][i][name], value), (i, name)
    group = a["param_groups"][0]
    assert group["params"] == b["param_groups"][0]["params"] and group["initial_lr"] == pytest.approx(2e-3)
    assert back["metrics_history"]["val_acc"] == pytest.approx([20.0, 31.5])
    fresh = TorchDeiT(**ARCH)
    t = _cfg().training
    opt, sched = torch_optim.make_optimizer(fresh, optimizer="adamw", lr=t.learning_rate,
                                            weight_decay=t.weight_decay, warmup_epochs=t.warmup_epochs,
                                            num_epochs=t.num_epochs)
    swa = torch.optim.swa_utils.AveragedModel(fresh)
    kept = torch_optim.load_checkpoint(rt, fresh, opt, sched, swa_model=swa)
    assert kept["epoch"] == 1 and int(swa.n_averaged) == 1
    x = torch.randn(4, 1, 8, 8)
    torch_optim.train_steps(fresh, [(x, torch.tensor([0, 1, 2, 3]))], opt=opt, sched=sched, steps_per_epoch=SPE)


def test_trainer_resumes_at_the_next_epoch(imported, tmp_path, capsys):
    out, _ = imported
    import shutil

    work = tmp_path / "work"
    shutil.copytree(out, work)
    summary = train_lib.train(_cfg(), work)
    log = capsys.readouterr().out
    assert "resuming from step 4 (epoch 2.00)" in log
    assert summary["steps"] == 6 and summary["epochs"] == 3 and "swa_test_accuracy" in summary
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("source") == "original" for r in rows if r["step"] <= 4)
    assert all("source" not in r for r in rows if r["step"] > 4) and any(r["step"] == 6 for r in rows)
    step, state, host = _restore(work)
    assert step == 6 and host["epoch"] == 3 and int(state.swa_count) == 2
    rt = tmp_path / "checkpoint_epoch_3.pth"
    convert.to_torch(work, rt, optimizer=True)
    back = torch.load(rt, weights_only=True)
    fresh = TorchDeiT(**ARCH)
    torch.optim.AdamW(fresh.parameters()).load_state_dict(back["optimizer_state_dict"])
    fresh.load_state_dict(back["model_state_dict"])
    assert back["epoch"] == 2 and len(back["metrics_history"]["val_loss"]) == 3


def test_read_original_run_rejects_what_it_cannot_continue():
    """In-memory checks of jaxkd.interop.original_run (the CLI rows are in tests/bad_input_cases.py)."""
    cfg = _cfg()
    shapes, params = expected_layout(cfg)
    tm = TorchDeiT(**ARCH)
    opt = torch.optim.AdamW(tm.parameters(), lr=2e-3, weight_decay=cfg.training.weight_decay)
    for p in tm.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    obj = {"model_state_dict": tm.state_dict(), "optimizer_state_dict": opt.state_dict(), "epoch": 0}
    run = orig.read_original_run(obj, "f.pth", cfg, shapes, params)
    assert run.optimizer == "adamw" and run.steps == 1 and run.epoch == 0
    # the pickled config names the optimiser where torch's state cannot (older torch: Adam and AdamW alike)
    old = {**obj, "optimizer_state_dict": {**opt.state_dict(), "param_groups": [
        {k: v for k, v in opt.state_dict()["param_groups"][0].items() if k != "decoupled_weight_decay"}]},
        "config": {"training": {"optimizer": "adam"}}}
    with pytest.raises(orig.OriginalRunError, match="torch Adam's \\(as its pickled config says.*optimizer=adam "):
        orig.read_original_run(old, "f.pth", cfg, shapes, params)
    group = dict(opt.state_dict()["param_groups"][0], betas=(0.9, 0.95))
    with pytest.raises(orig.OriginalRunError, match="betas is .*0.95.*cannot be continued exactly"):
        orig.read_original_run({**obj, "optimizer_state_dict": {**opt.state_dict(), "param_groups": [group]}},
                               "f.pth", cfg, shapes, params)
    with pytest.raises(orig.OriginalRunError, match="no optimizer_state_dict"):
        orig.read_original_run({"model_state_dict": tm.state_dict()}, "f.pth", cfg, shapes, params)
    with pytest.raises(orig.OriginalRunError, match="no SWA average.*use_swa=false"):  # SWA from epoch 2 on
        orig.read_original_run({**obj, "epoch": 1}, "f.pth", cfg, shapes, params)

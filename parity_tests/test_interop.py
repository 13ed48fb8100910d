"""jaxkd.interop: generic torch <-> NNX state-dict conversion, checked on a small model that has every kind of
leaf (conv, linear, BatchNorm, LayerNorm, a raw token Param, Sequential with weightless slots, nnx.List)
against an independently written torch mirror."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import (
    StateDictMismatch,
    jax_to_torch,
    torch_state_dict_keys,
    torch_state_dict_shapes,
    torch_to_jax,
)
from jaxkd.models.layers import Activation, BatchNorm, gelu_exact

TOL = 1e-5


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(4, 4, rngs=rngs)


class Tiny(nnx.Module):
    """x (B,8,8,3) -> stem (B,4,4,4) -> 16 tokens + cls -> 2 residual blocks -> head(cls) (B,5)."""

    def __init__(self, rngs: nnx.Rngs):
        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, 1, 4)))
        self.stem = nnx.Sequential(
            nnx.Conv(3, 4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs),
            BatchNorm(4),
            Activation(gelu_exact),
        )
        self.blocks = nnx.List([Block(rngs), Block(rngs)])
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # has rng state: must not be converted
        self.head = nnx.Linear(4, 5, rngs=rngs)

    def __call__(self, x):
        h = self.stem(x)
        t = h.reshape(h.shape[0], -1, h.shape[-1])
        t = jnp.concatenate([jnp.broadcast_to(self.cls_token[...], (t.shape[0], 1, 4)), t], axis=1)
        for b in self.blocks:
            t = t + b.fc(b.norm(t))
        return self.head(t[:, 0])


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(4)
        self.fc = torch.nn.Linear(4, 4)


class TorchTiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, 4))
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(4),
                                        torch.nn.GELU())
        self.blocks = torch.nn.ModuleList([TorchBlock(), TorchBlock()])
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):  # x NCHW
        h = self.stem(x)
        t = h.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        for b in self.blocks:
            t = t + b.fc(b.norm(t))
        return self.head(t[:, 0])


EXPECTED_KEYS = sorted(
    ["cls_token", "stem.0.weight", "head.weight", "head.bias"]
    + [f"stem.1.{n}" for n in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]]
    + [f"blocks.{i}.{m}.{n}" for i in range(2) for m in ["norm", "fc"] for n in ["weight", "bias"]]
)


def _leaves(model):
    return jax.tree.leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))


def _torch_model(seed=0):
    torch.manual_seed(seed)
    t = TorchTiny()
    with torch.no_grad():
        bn = t.stem[1]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.2)
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(17)
        for b in t.blocks:
            b.norm.weight.uniform_(0.5, 1.5)
            b.norm.bias.normal_(0, 0.2)
    return t.eval()


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 8, 8, 3)).astype(np.float32)


def _forward_pair(t, j, x):
    with torch.no_grad():
        lt = t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    j.eval()
    return lt, np.asarray(j(jnp.asarray(x)))


def test_keys_and_shapes_follow_naming_contract():
    j = Tiny(nnx.Rngs(0))
    assert torch_state_dict_keys(j) == EXPECTED_KEYS  # 'layers' dropped, rng state of Dropout excluded
    t_shapes = {k: tuple(v.shape) for k, v in TorchTiny().state_dict().items()}
    assert torch_state_dict_shapes(j) == t_shapes


def test_torch_to_jax_forward_matches(record_property):
    t = _torch_model()
    j = torch_to_jax(Tiny(nnx.Rngs(1)), t.state_dict())
    assert int(j.stem.layers[1].num_batches_tracked[...]) == 17
    lt, lj = _forward_pair(t, j, _x())
    diff = float(np.max(np.abs(lt - lj)))
    print(f"tiny torch->jax eval max|diff| = {diff:.3e}")
    record_property("max_abs_diff", diff)
    assert diff <= TOL


def test_jax_export_loads_strict_into_torch_and_matches():
    j = Tiny(nnx.Rngs(2))
    j.stem.layers[1].mean[...] = jnp.linspace(-0.5, 0.5, 4)
    sd = jax_to_torch(j)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["stem.1.num_batches_tracked"].dtype == np.int64 and sd["stem.1.num_batches_tracked"].shape == ()
    t = TorchTiny().eval()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    lt, lj = _forward_pair(t, j, _x(1))
    assert np.max(np.abs(lt - lj)) <= TOL


def test_negative_control_untransposed_linear_fails():
    """Loading a Linear weight without the (out,in)->(in,out) transpose changes the forward."""
    t = _torch_model()
    sd = dict(t.state_dict())
    sd["blocks.0.fc.weight"] = sd["blocks.0.fc.weight"].T.contiguous()  # square: shape check cannot catch it
    j = torch_to_jax(Tiny(nnx.Rngs(1)), sd)
    lt, lj = _forward_pair(t, j, _x())
    assert np.max(np.abs(lt - lj)) > 100 * TOL


def test_round_trip_jax_torch_jax_bit_exact():
    a = Tiny(nnx.Rngs(3))
    a.stem.layers[1].var[...] = jnp.asarray([0.3, 1.7, 2.2, 0.9], jnp.float32)
    a.stem.layers[1].num_batches_tracked[...] = jnp.asarray(5, jnp.int32)
    b = Tiny(nnx.Rngs(4))
    assert not all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))
    sd_a = jax_to_torch(a)
    torch_to_jax(b, {k: torch.from_numpy(v) for k, v in sd_a.items()})  # through torch tensors
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(np.asarray(x), np.asarray(y))
    sd_b = jax_to_torch(b)
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype and sd_a[k].tobytes() == sd_b[k].tobytes(), k


def test_checkpoint_wrapper_and_numpy_values():
    t = _torch_model(seed=5)
    sd_np = {k: v.numpy() for k, v in t.state_dict().items()}
    j1 = torch_to_jax(Tiny(nnx.Rngs(0)), {"model_state_dict": sd_np, "epoch": 3, "optimizer": {}})
    j2 = torch_to_jax(Tiny(nnx.Rngs(1)), t.state_dict())
    for x, y in zip(_leaves(j1), _leaves(j2), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_missing_unexpected_and_misshaped_keys_are_named():
    sd = {k: v.numpy() for k, v in _torch_model(seed=6).state_dict().items()}  # non-zero biases
    j = Tiny(nnx.Rngs(1))
    before = [np.asarray(x).copy() for x in _leaves(j)]
    old_bias = np.asarray(j.blocks[1].fc.bias[...]).copy()

    missing = {k: v for k, v in sd.items() if k != "blocks.1.fc.bias"}
    with pytest.raises(StateDictMismatch, match=r"missing keys: blocks\.1\.fc\.bias"):
        torch_to_jax(j, missing)
    extra = dict(sd, **{"extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(StateDictMismatch, match=r"unexpected keys: extra\.weight"):
        torch_to_jax(j, extra)
    bad = dict(sd, **{"head.weight": np.zeros((5, 3), np.float32)})
    with pytest.raises(StateDictMismatch, match=r"head\.weight: expected \(5, 4\), got \(5, 3\)"):
        torch_to_jax(j, bad)
    with pytest.raises(ValueError):  # StateDictMismatch is a ValueError
        torch_to_jax(j, {})
    # nothing was written by the failed loads
    for x, y in zip(before, _leaves(j), strict=True):
        assert np.array_equal(x, np.asarray(y))

    # strict=False: missing keep their value, unexpected ignored, mis-shaped still an error
    torch_to_jax(j, dict(missing, **{"extra.weight": np.zeros(3, np.float32)}), strict=False)
    assert np.array_equal(np.asarray(j.head.kernel[...]), sd["head.weight"].T)
    assert np.array_equal(np.asarray(j.blocks[1].fc.bias[...]), old_bias)
    assert not np.array_equal(old_bias, sd["blocks.1.fc.bias"])
    with pytest.raises(StateDictMismatch, match=r"head\.weight"):
        torch_to_jax(j, bad, strict=False)


def test_bad_value_type_and_key_collision():
    sd = jax_to_torch(Tiny(nnx.Rngs(0)))
    sd["head.bias"] = [0.0] * 5
    with pytest.raises(TypeError, match="head.bias"):
        torch_to_jax(Tiny(nnx.Rngs(0)), sd)

    class Clash(nnx.Module):
        def __init__(self):
            self.weight = nnx.Param(jnp.ones(2))
            self.scale = nnx.Param(jnp.ones(2))

    with pytest.raises(ValueError, match="weight"):
        jax_to_torch(Clash())


def test_bfloat16_tensor_loads_bit_exact():
    class Half(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(3, 2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))

    w = torch.randn(2, 3).to(torch.bfloat16)
    m = torch_to_jax(Half(), {"lin.weight": w, "lin.bias": torch.zeros(2, dtype=torch.bfloat16)})
    got = np.asarray(m.lin.kernel[...])
    assert got.dtype == ml_dtypes.bfloat16
    assert np.array_equal(got.T.astype(np.float32), w.float().numpy())


def test_works_without_torch():
    """jaxkd.interop and jaxkd.models never import torch; numpy-only dicts round-trip with torch unavailable."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import numpy as np, jax.numpy as jnp
        from flax import nnx
        import jaxkd, jaxkd.interop as io, jaxkd.models.layers as L, jaxkd.models.cnn
        class M(nnx.Module):
            def __init__(self, rngs):
                self.seq = nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), L.Activation(L.gelu_exact), L.BatchNorm(4))
        a, b = M(nnx.Rngs(0)), M(nnx.Rngs(1))
        sd = io.jax_to_torch(a)
        assert sorted(sd) == ['seq.0.bias', 'seq.0.weight', 'seq.2.bias', 'seq.2.num_batches_tracked',
                              'seq.2.running_mean', 'seq.2.running_var', 'seq.2.weight'], sorted(sd)
        io.torch_to_jax(b, {"model_state_dict": sd})
        assert all(np.array_equal(sd[k], v) for k, v in io.jax_to_torch(b).items())
        print("OK")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-2000:]

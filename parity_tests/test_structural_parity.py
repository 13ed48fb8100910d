"""Parity of jaxkd.losses.structural with its torch_ref.structural twin (LATER.md §3.1–3.4): CKA (linear / RBF,
token-wise and CLS-only batch mode, both bandwidth rules), the Gram loss (both norms), the layer-wise structural loss
with projectors (every teacher mode), the epoch weights (both weightings) and the weighted sum.

Every case runs the JAX function (gradients by ``jax.vjp``) and the torch twin (autograd) on the same inputs and
projector weights (torch_ref's heads, copied into jaxkd's with ``jaxkd.interop.torch_to_jax``), twice:
* float32: value rel. error <= RTOL = 1e-6 (scale |torch value|); gradients w.r.t. every input <= GRAD_RTOL =
  5e-6 relative to the max |torch gradient| of the call (measured up to 1.0e-6: the fp32 rounding of the kernels,
  of exp and of the centring's cancellations; the float64 run shows the formulas are the same) — for the cases with
  projector networks and for the weighted sum (its terms are the cases above) the float32 value only (gradients in
  float64: one compilation less per case);
* float64 (JAX under ``jax.enable_x64``, torch double, heads built in float64): value and every gradient
  <= X64_RTOL = 1e-10, same scales.
Negative controls: each test evaluates, in torch, the formula jaxkd would compute if it were wrong in the way the
test is about (diagonal in the median, averaged median, bandwidth with a gradient, no centring, no normalisation,
linear kernel in batch mode, un-squared vs squared Frobenius, a trainable vs a fixed teacher side, λ_gram coupled
to λ_cka, ...) and asserts it misses jaxkd's value (or gradient) by more than 10× the tolerance.
The measured maxima per test are recorded as junit properties (rel_value, rel_grad, rel_value64, rel_grad64).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jaxkd.losses as jl
import torch_ref.losses as tl
import torch_ref.structural as ts
from jaxkd.interop import jax_to_torch, torch_to_jax

RTOL, GRAD_RTOL, X64_RTOL = 1e-6, 5e-6, 1e-10
B, N, DS, DT, HID, PROJ = 4, 9, 12, 20, 16, 8
_MAXIMA: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _record_maxima(record_property):
    _MAXIMA.clear()
    yield
    for what, e in sorted(_MAXIMA.items()):
        record_property(f"rel_{what}", float(e))
    print(" ".join(f"{k} {v:.1e}" for k, v in sorted(_MAXIMA.items())), end=" ")  # pytest -s: the figures


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().numpy() if torch.is_tensor(x) else x, np.float64)


def _rel(got, ref, scale=None) -> float:
    got, ref = _np(got), _np(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    s = float(np.max(np.abs(ref), initial=0.0)) if scale is None else scale
    return float(np.max(np.abs(got - ref), initial=0.0) / max(s, 1e-30))


def check(what, got, ref, tol, scale=None) -> float:
    assert np.all(np.isfinite(_np(got))), f"{what}: non-finite JAX result"
    e = _rel(got, ref, scale)
    _MAXIMA[what] = max(_MAXIMA.get(what, 0.0), e)
    assert e <= tol, f"{what}: rel err {e:.3e} > {tol:.0e}"
    return e


def differs(got, wrong, tol, scale=None) -> None:
    """Negative control: ``wrong`` must miss ``got`` by more than 10× the tolerance."""
    e = _rel(got, wrong, scale)
    assert e > 10 * tol, f"negative control not detected (rel err {e:.3e})"


def _jax_heads(torch_heads, dtype):
    """jaxkd ProjectionHeads computing in ``dtype`` with the torch_ref heads' weights (call under x64 for
    float64)."""
    heads = []
    for m in torch_heads:
        h = jl.ProjectionHead(m.fc1.in_features, m.fc1.out_features, m.fc2.out_features, dtype=dtype,
                              param_dtype=dtype, rngs=nnx.Rngs(0))
        heads.append(torch_to_jax(h, {k: v.detach().numpy() for k, v in m.state_dict().items()}))
    return heads


class Run:
    """One comparison: value and gradients (w.r.t. every input and projector parameter) of jaxkd and torch_ref in
    float32 and float64. Keeps the float64 JAX gradients (``grads64``: inputs, then heads as torch-keyed dicts) and
    values for the negative controls."""

    def __init__(self, jax_fn, torch_fn, arrays, torch_heads=(), grads32=True):
        """``grads32=False``: float32 values only (gradients in float64 only): the float32 backward would be one
        more compilation of the whole case."""
        self.values, self.grads64 = {}, None
        for jdt, tdt, sfx, vtol, gtol in ((jnp.float32, torch.float32, "", RTOL, GRAD_RTOL),
                                          (jnp.float64, torch.float64, "64", X64_RTOL, X64_RTOL)):
            with_grads = bool(sfx) or grads32
            with jax.enable_x64(bool(sfx)):
                heads = _jax_heads(torch_heads, jdt)
                splits = [nnx.split(h) for h in heads]

                def f(params, *xs):
                    return jax_fn([nnx.merge(g, p) for (g, _), p in zip(splits, params)], *xs)

                @jax.jit  # one compilation per case (eager JAX would compile every op of it on its own)
                def value_and_grads(params, *xs):
                    if not with_grads:
                        return f(params, *xs), None
                    out, vjp = jax.vjp(f, params, *xs)
                    return out, vjp(jnp.ones_like(out))

                out, grads = value_and_grads([p for _, p in splits], *(jnp.asarray(a, jdt) for a in arrays))
                out = np.asarray(out)
                if with_grads:
                    jgrads = [np.asarray(g) for g in grads[1:]]
                    jgrads += [jax_to_torch(nnx.merge(g, gp)) for (g, _), gp in zip(splits, grads[0])]
            mods = [_clone(m, tdt) for m in torch_heads]
            ts_ = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in arrays]
            ref = torch_fn(mods, *ts_)
            check("value" + sfx, out, ref, vtol)
            self.values[sfx] = out
            if not with_grads:
                continue
            ref.backward()
            rgrads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in ts_]
            rgrads += [{k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in m.named_parameters()}
                       for m in mods]
            pairs = []
            for g, r in zip(jgrads, rgrads):
                pairs += [(g[k], r[k]) for k in r] if isinstance(r, dict) else [(g, r)]
            scale = max(float(np.max(np.abs(_np(r)), initial=0.0)) for _, r in pairs)
            if scale == 0:  # a term weighted 0 (a warm-up): no gradient at all, on both sides
                assert all(float(np.max(np.abs(_np(g)), initial=0.0)) == 0.0 for g, _ in pairs)
            for g, r in pairs:
                check("grad" + sfx, g, r, gtol, scale or 1.0)
            if sfx:
                self.grads64, self.gscale64 = jgrads, scale
        self.value = self.values[""]


def _clone(m, dtype):
    return copy.deepcopy(m).to(dtype)


def _tokens(b, n, d, seed, shift=0.0):
    return (np.random.default_rng(seed).standard_normal((b, n, d)) + shift).astype(np.float32)


def _t64(a):
    return torch.tensor(a, dtype=torch.float64)


def _t64_grad(fn, *arrays):
    """torch float64 gradients of fn(*tensors) w.r.t. every input (for gradient controls)."""
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    fn(*xs).backward()
    return [x.grad for x in xs]


# ---------------------------------------------------------------- CKA: token-wise and batch mode
def _cka_wrong(s, t, kernel, *, bandwidth=None, normalize=True, center=True, detach=True):
    """1 − mean CKA in torch float64 with one thing changed: ``bandwidth`` a callable d2 -> s (per point set),
    no per-token normalisation, no centring, or a bandwidth that carries gradient."""
    def points(z):
        return z.squeeze(1).unsqueeze(0) if z.shape[1] == 1 else z

    def kern(z):
        z = F.normalize(z, dim=-1) if normalize else z
        if kernel == "linear":
            return z @ z.transpose(1, 2)
        d2 = (z.unsqueeze(2) - z.unsqueeze(1)).pow(2).sum(-1)
        bw = bandwidth(d2) if bandwidth is not None else ts.median_bandwidth(d2) if detach else _median_live(d2)
        return torch.exp(-d2 / (2 * bw))

    k, l_ = kern(points(s)), kern(points(t))
    m = k.shape[-1]
    if center:
        h = torch.eye(m, dtype=k.dtype) - 1.0 / m
        k, l_ = h @ k @ h, h @ l_ @ h
    hs = lambda a, b: (a * b).sum((1, 2)) / ((m - 1) ** 2 + 1e-8)  # noqa: E731
    return 1 - (hs(k, l_) / torch.sqrt(hs(k, k) * hs(l_, l_) + 1e-8)).mean()


def _offdiag(d2):
    m = d2.shape[-1]
    return d2[:, ~torch.eye(m, dtype=torch.bool)]


def _median_live(d2):  # the default bandwidth, but differentiable (not a constant)
    return (torch.median(_offdiag(d2), dim=1).values + 1e-8)[:, None, None]


CKA_CASES = [("linear", "median_offdiag", N), ("rbf", "median_offdiag", N), ("rbf", "median_all", N),
             ("linear", "median_offdiag", 1), ("rbf", "median_offdiag", 1), ("rbf", "median_all", 1)]


@pytest.mark.parametrize("kernel,bandwidth,n", CKA_CASES)
def test_cka_loss(kernel, bandwidth, n):
    """Token-wise (N = 9: B kernels 9×9) and batch mode (N = 1: one B×B kernel of the class tokens); linear and
    RBF; the RBF bandwidth per kernel without the diagonal (jaxkd) or over everything with it (the original)."""
    b = B if n > 1 else 8  # batch mode: 8 class tokens (28 pairs: an even count, so the two middle values differ)
    s, t = _tokens(b, n, DS, 1), _tokens(b, n, DT, 2, shift=0.5)
    kw = dict(rbf_bandwidth=bandwidth)
    run = Run(lambda _, x, y: jl.cka_loss(x, y, kernel, **kw), lambda _, x, y: ts.cka_loss(x, y, kernel, **kw), [s, t])
    v64 = run.values["64"]
    S, T = _t64(s), _t64(t)
    differs(v64, _cka_wrong(S, T, kernel, center=False), X64_RTOL)  # no centring
    differs(v64, _cka_wrong(S, T, kernel, normalize=False), X64_RTOL)  # tokens not L2-normalised
    if n == 1:  # per-image 1×1 kernels instead of the B×B kernel (no switch to batch mode): K̃ = 0, CKA = 0
        differs(v64, 1.0, X64_RTOL)
    if kernel == "linear":
        return
    other = "median_all" if bandwidth == "median_offdiag" else "median_offdiag"
    differs(v64, ts.cka_loss(S, T, kernel, rbf_bandwidth=other), X64_RTOL)  # the other bandwidth rule
    differs(v64, ts.cka_loss(S, T, "linear"), X64_RTOL)  # the linear kernel (the original's batch mode)
    if bandwidth == "median_offdiag":
        # the diagonal included in each kernel's median; the median averaged (jnp.median's even-count rule)
        differs(v64, _cka_wrong(S, T, kernel, bandwidth=lambda d2: torch.median(
            d2.reshape(d2.shape[0], -1), dim=1).values[:, None, None] + 1e-8), X64_RTOL)
        differs(v64, _cka_wrong(S, T, kernel, bandwidth=lambda d2: torch.quantile(
            _offdiag(d2), 0.5, dim=1, interpolation="midpoint")[:, None, None] + 1e-8), X64_RTOL)
        # a bandwidth that carries gradient: the gradient w.r.t. the student tokens moves
        live = _t64_grad(lambda x, y: _cka_wrong(x, y, kernel, detach=False), s, t)[0]
        differs(run.grads64[0], live, X64_RTOL, scale=run.gscale64)


def test_rbf_bandwidth_is_the_lower_median():
    """The bandwidth itself: per kernel the lower median of the off-diagonal squared distances (torch.median's
    even-count rule; jnp.median would average) — against numpy's sort of the explicit differences."""
    x = _tokens(3, 8, 5, 3)
    d2 = ((x[:, :, None] - x[:, None]) ** 2).sum(-1)
    got = np.asarray(jl.median_bandwidth(jnp.asarray(d2), eps=0.0))[:, 0, 0]
    off = d2[:, ~np.eye(8, dtype=bool)]
    want = np.sort(off, axis=1)[:, (off.shape[1] - 1) // 2]
    check("value", got, want, RTOL)
    differs(got, np.median(off, axis=1), RTOL)  # averaged middle values
    got_all = float(jl.median_bandwidth(jnp.asarray(d2), "median_all", eps=0.0))  # the original: one value
    check("value", got_all, np.sort(d2.reshape(-1))[(d2.size - 1) // 2], RTOL)
    differs(got_all, np.sort(off.reshape(-1))[(off.size - 1) // 2], RTOL)  # the diagonal zeros left out


# ---------------------------------------------------------------- Gram
@pytest.mark.parametrize("norm", ["squared", "frobenius"])
@pytest.mark.parametrize("n", [N, 1])
def test_gram_matrix_loss(norm, n):
    b = B if n > 1 else 6
    s, t = _tokens(b, n, DS, 4), _tokens(b, n, DT, 5, shift=0.5)
    run = Run(lambda _, x, y: jl.gram_matrix_loss(x, y, gram_norm=norm),
              lambda _, x, y: ts.gram_matrix_loss(x, y, gram_norm=norm), [s, t])
    S, T = _t64(s), _t64(t)
    pts = (lambda z: z.squeeze(1).unsqueeze(0)) if n == 1 else (lambda z: z)
    gs, gt = [(pts(z) / pts(z).norm(dim=-1, keepdim=True)) @ (pts(z) / pts(z).norm(dim=-1, keepdim=True)).transpose(
        1, 2) for z in (S, T)]
    m = gs.shape[-1]
    fro = (gs - gt).pow(2).sum((1, 2)).sqrt()
    differs(run.values["64"], ((fro if norm == "squared" else fro ** 2) / m ** 2).mean(), X64_RTOL)  # other norm
    raw = [pts(z) @ pts(z).transpose(1, 2) for z in (S, T)]  # no normalisation
    rf = (raw[0] - raw[1]).pow(2).sum((1, 2))
    differs(run.values["64"], ((rf if norm == "squared" else rf.sqrt()) / m ** 2).mean(), X64_RTOL)
    if norm == "squared" and n > 1:  # the same number as the 'gram' token loss (mean squared entry difference)
        check("value", jl.gram_loss(jnp.asarray(s), jnp.asarray(t)), run.value, RTOL)
    if n == 1:  # per-image 1×1 Grams (the original's CLS-only Gram) are always 1: that loss would be 0
        assert run.value > 1e-3


# ---------------------------------------------------------------- layer-wise structural loss with projectors
@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    return ([tl.ProjectionHead(DS, HID, PROJ) for _ in range(2)], [tl.ProjectionHead(DT, HID, PROJ) for _ in range(2)])


# every teacher mode once, both kernels, both modes (each case compiles a projector network forward and backward in
# two precisions: the weighted sum below is compared without projectors)
LAYER_CASES = [("identity", "linear", N), ("frozen", "rbf", N), ("trainable", "rbf", 1)]


@pytest.mark.parametrize("mode,kernel,n", LAYER_CASES)
def test_layerwise_structural_loss(heads, mode, kernel, n):
    """L_cka + L_gram of two layers through student projectors and the teacher side of ``mode``."""
    s_heads, t_heads = heads
    b = B if n > 1 else 6
    arrays = [_tokens(b, n, DS, 6), _tokens(b, n, DS, 7), _tokens(b, n, DT, 8, 0.5), _tokens(b, n, DT, 9, 0.5)]
    th = [] if mode == "identity" else t_heads
    kw = dict(use_cka=True, use_gram=True, cka_kernel_type=kernel, teacher_mode=mode)

    def call(lib, mods, s0, s1, t0, t1):
        out = lib.layerwise_structural_loss([s0, s1], [t0, t1], mods[:2], mods[2:] or None, **kw)
        return out["cka"] + 0.7 * out["gram"]

    run = Run(lambda m, *a: call(jl, m, *a), lambda m, *a: call(ts, m, *a), arrays, [*s_heads, *th], grads32=False)
    with torch.no_grad():
        ps = [_clone(h, torch.float64)(_t64(a)) for h, a in zip(s_heads, arrays[:2])]
        raw_t = [_t64(a) for a in arrays[2:]]
        pt = [_clone(h, torch.float64)(z) for h, z in zip(t_heads, raw_t)]
    per = lambda a, c: ts.cka_loss(a, c, kernel) + 0.7 * ts.gram_matrix_loss(a, c)  # noqa: E731
    v64 = run.values["64"]
    own, other = (raw_t, pt) if mode == "identity" else (pt, raw_t)
    differs(v64, sum(per(a, c) for a, c in zip(ps, other)) / 2, X64_RTOL)  # the other teacher side
    differs(v64, sum(per(a, c) for a, c in zip(ps, own[::-1])) / 2, X64_RTOL)  # teacher layers swapped
    differs(v64, sum(per(a, c) for a, c in zip(ps, own)), X64_RTOL)  # the sum over layers, not the mean
    if mode != "identity":  # the teacher projectors' gradient: 0 when frozen; the trainable one's otherwise
        g_tproj = [g[k] for g in run.grads64[4 + 2:] for k in sorted(g)]
        if mode == "frozen":  # (the parity above compares them with torch's zeros); the control: what a
            # trainable teacher side gets instead
            assert all(float(np.max(np.abs(g))) == 0.0 for g in g_tproj)
            mods = [_clone(m, torch.float64) for m in (*s_heads, *t_heads)]
            xs = [_t64(a) for a in arrays]
            out = ts.layerwise_structural_loss(xs[:2], xs[2:], mods[:2], mods[2:], **{**kw, "teacher_mode":
                                                                                         "trainable"})
            (out["cka"] + 0.7 * out["gram"]).backward()
            assert max(float(p.grad.abs().max()) for m in mods[2:] for p in m.parameters()) > 1e-6
        else:
            assert max(float(np.max(np.abs(g))) for g in g_tproj) > 1e-6


# ---------------------------------------------------------------- λ_cka(e), λ_gram(e) and the weighted sum
FLAGS = [(True, False), (False, True), (True, True)]


@pytest.mark.parametrize("weighting", ["separate", "coupled"])
def test_structural_weights_at(weighting):
    """Every epoch 0..8 (and halves), every combination of the two switches, host and traced epochs."""
    kw = dict(lambda_cka=0.5, lambda_gram=0.2, cka_warmup_epochs=3, weighting=weighting)
    epochs = np.arange(0, 8.5, 0.5)
    for use_cka, use_gram in FLAGS:
        f = dict(use_cka=use_cka, use_gram=use_gram, **kw)
        host = np.array([jl.structural_weights_at(float(e), **f) for e in epochs])
        traced = np.asarray(jax.jit(jax.vmap(lambda e: jnp.stack(jl.structural_weights_at(e, **f))))(
            jnp.asarray(epochs, jnp.float32)))
        ref = np.array([ts.structural_weights_at(float(e), **f) for e in epochs])
        assert np.array_equal(host, ref) and np.allclose(traced, ref, rtol=0, atol=1e-7), (use_cka, use_gram)
        other = np.array([ts.structural_weights_at(float(e), **{**f, "weighting": {
            "separate": "coupled", "coupled": "separate"}[weighting]}) for e in epochs])
        if use_gram:  # negative control: the other weighting (λ_gram coupled to λ_cka, or Gram's warm-up dropped)
            assert not np.array_equal(host, other), (use_cka, use_gram)


DIST_CASES = [("separate", 4, True), ("coupled", 4, True), ("separate", 1, False), ("coupled", 1, False)]


@pytest.mark.parametrize("weighting,epoch,use_cka", DIST_CASES)
def test_structural_distillation_loss(weighting, epoch, use_cka):
    """λ_cka(e)·L_cka + λ_gram(e)·L_gram (RBF; raw tokens, the projectors are test_layerwise_structural_loss's):
    both losses after the warm-up (3 epochs), and Gram alone inside it (the original's Gram-only mode did not
    wait)."""
    arrays = [_tokens(B, N, DS, 10), _tokens(B, N, DS, 11), _tokens(B, N, DT, 12, 0.5), _tokens(B, N, DT, 13, 0.5)]
    kw = dict(epoch=epoch, use_cka=use_cka, use_gram=True, lambda_cka=0.5, lambda_gram=0.2, cka_warmup_epochs=3,
              cka_kernel_type="rbf", weighting=weighting)

    def call(lib, s0, s1, t0, t1):
        return lib.structural_distillation_loss([s0, s1], [t0, t1], None, **kw)

    run = Run(lambda _, *a: call(jl, *a)[0], lambda _, *a: call(ts, *a)[0], arrays, grads32=False)
    _, parts = jax.jit(lambda *a: call(jl, *a))(*(jnp.asarray(a) for a in arrays))
    _, ref = call(ts, *(torch.tensor(a) for a in arrays))
    want = {"gram", "lambda_gram"} | ({"cka", "lambda_cka"} if use_cka else set())
    assert set(parts) == set(ref) == want
    for k in parts:
        check("value", parts[k], ref[k], RTOL)
    # negative control: the other weighting (after the warm-up: coupled λ_gram = λ_cka = 0.5 vs separate 0.2;
    # inside it, Gram alone: coupled 0.2 from epoch 0 vs separate 0)
    if use_cka:
        wrong = ref["cka"] * 0.5 + ref["gram"] * (0.5 if weighting == "separate" else 0.2)
    else:
        wrong = ref["gram"] * (0.2 if weighting == "separate" else 0.0)
    assert abs(float(run.value) - float(wrong)) > 1e-4, (run.value, wrong)

"""Parity of every jaxkd.losses function with its torch_ref.losses twin: values and gradients, float32.

Every case runs the JAX function (gradients by ``jax.vjp``) and the torch twin (autograd) on the same float32
inputs and projector weights, and compares the value and the gradient with respect to every input array and
every projector parameter.

Relative error = max|jax − torch| / scale, tolerance RTOL = 1e-6 in float32, where scale is
* values: max|torch value| (scalars: |value|; array outputs are compared elementwise and differentiated with a
  fixed random cotangent);
* gradients: the max abs of the whole reference gradient of the call (all inputs and projector parameters), so
  analytically-zero gradients (e.g. the last LayerNorm bias under CKA's centring) and small side gradients are
  measured on the gradient's own scale rather than on their rounding noise.
One stated exception, the correlation loss (``CORR_RTOL`` = 1e-5 in float32): its logits are C/τ, so the
~1e-7 rounding of the cosine matrix C is amplified 1/τ = 10× at τ = 0.1, and at τ = 1 the pooled KL compares
nearly uniform B×B rows (a cancellation); torch float32 itself is off from torch float64 by up to ~2e-6 there
(measured). To show the formulas are nonetheless identical, the worst case (pooled KL, τ = 1, B = 3) is also
run in float64 (JAX x64 vs torch double) at 1e-10.
Negative controls: a plausible wrong formula (swapped KL direction, missing τ², wrong normalisation, tanh GELU,
LN eps, align_corners=True, uncentred CKA, ...) evaluated in torch must miss the JAX value by > 10·RTOL.
JAXKD_PARITY_TABLE=<file> writes the measured maxima as a markdown table; every test also records its own maxima
as junit properties (rel_value, rel_grad, rel_value64, rel_grad64).
"""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jaxkd.losses as jl
import torch_ref.losses as tl
from jaxkd.interop import jax_to_torch

RTOL = 1e-6
CORR_RTOL = 1e-5
X64_RTOL = 1e-10
MEASURED: dict[str, dict[str, float]] = {}
_TEST_MAXIMA: dict[str, float] | None = None  # the running test's maxima, recorded as junit properties


@pytest.fixture(scope="module", autouse=True)
def _parity_table():
    yield
    path = os.environ.get("JAXKD_PARITY_TABLE")
    if path:
        with open(path, "w") as fh:
            fh.write("| function | value fp32 | grad fp32 | value fp64 | grad fp64 |\n")
            fh.write("| --- | --- | --- | --- | --- |\n")
            for name, m in sorted(MEASURED.items()):
                cells = [f"{m[k]:.2e}" if k in m else "–" for k in ("value", "grad", "value64", "grad64")]
                fh.write(f"| {name} | {' | '.join(cells)} |\n")


@pytest.fixture(autouse=True)
def _record_maxima(record_property):
    """Each test's maximum relative errors (rel_value, rel_grad, rel_value64, rel_grad64) as junit properties,
    for ``python -m parity_tests.review``; recorded at teardown, so a failing check's figure is recorded too."""
    global _TEST_MAXIMA
    _TEST_MAXIMA = {}
    yield
    for what, e in sorted(_TEST_MAXIMA.items()):
        record_property(f"rel_{what}", e)
    _TEST_MAXIMA = None


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().numpy() if torch.is_tensor(x) else x, np.float64)


def _err(got, ref, scale) -> float:
    return float(np.max(np.abs(got - ref), initial=0.0) / max(scale, 1e-30))


def check(name, what, got, ref, scale=None, tol=RTOL) -> float:
    """Assert rel err <= tol (scale: max|ref| unless given); records the maximum under ``MEASURED[name][what]``."""
    got, ref = _np(got), _np(ref)
    assert got.shape == ref.shape, (name, what, got.shape, ref.shape)
    assert np.all(np.isfinite(got)), f"{name} {what}: non-finite JAX result"
    e = _err(got, ref, np.max(np.abs(ref), initial=0.0) if scale is None else scale)
    m = MEASURED.setdefault(name, {"value": 0.0, "grad": 0.0})
    m[what] = max(m.get(what, 0.0), e)
    if _TEST_MAXIMA is not None:
        _TEST_MAXIMA[what] = max(_TEST_MAXIMA.get(what, 0.0), e)
    assert e <= tol, f"{name} {what}: rel err {e:.3e} > {tol:.0e}"
    return e


def differs(got, wrong_ref, tol=RTOL) -> None:
    """Negative control: ``wrong_ref`` (a wrong formula) must miss ``got`` by more than 10× the parity tolerance."""
    got, wrong = _np(got), _np(wrong_ref)
    e = _err(got, wrong, np.max(np.abs(wrong), initial=0.0))
    assert e > 10 * tol, f"negative control not detected (rel err {e:.3e})"


def _torch_run(torch_fn, arrays, heads, cot, dtype):
    mods = [copy.deepcopy(m).to(dtype) for m in heads]
    ts = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = torch_fn(mods, *ts)
    out.backward(torch.tensor(cot, dtype=dtype))
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in ts]
    pgrads = [{k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in m.named_parameters()}
              for m in mods]
    return out.detach(), grads, pgrads


def _jax_run(jax_fn, arrays, heads, cot, dtype):
    splits = [nnx.split(h) for h, _ in heads]

    def f(params, *xs):
        return jax_fn([nnx.merge(g, p) for (g, _), p in zip(splits, params)], *xs)

    out, vjp = jax.vjp(f, [p for _, p in splits], *(jnp.asarray(a, dtype) for a in arrays))
    grads = vjp(jnp.asarray(cot, out.dtype))
    pgrads = [jax_to_torch(nnx.merge(g, gp)) for (g, _), gp in zip(splits, grads[0])]
    return out, list(grads[1:]), pgrads


def check_call(name, jax_fn, torch_fn, arrays, heads=(), tol=RTOL, x64=False, seed=0):
    """Compare ``jax_fn(jax_heads, *arrays)`` with ``torch_fn(torch_heads, *tensors)``: value and all gradients.

    ``arrays``: float32 numpy inputs; ``heads``: (jaxkd ProjectionHead, torch_ref ProjectionHead) pairs with equal
    weights. ``x64``: also compare in float64 (JAX under ``jax.enable_x64``; projector-free cases only).
    Returns the float32 JAX output as numpy.
    """
    runs = [(jnp.float32, torch.float32, "", tol)]
    if x64:
        assert not heads, "x64 parity is for projector-free cases"
        runs.append((jnp.float64, torch.float64, "64", X64_RTOL))
    result = None
    for jdt, tdt, sfx, rtol in runs:
        with jax.enable_x64(bool(sfx)):
            probe = jax.eval_shape(lambda *xs: jax_fn([h for h, _ in heads], *xs),
                                   *(jax.ShapeDtypeStruct(a.shape, jdt) for a in arrays))
            rng = np.random.default_rng(seed)
            cot = np.ones(()) if probe.ndim == 0 else rng.standard_normal(probe.shape)
            out, grads, pgrads = _jax_run(jax_fn, arrays, heads, cot, jdt)
            out = np.asarray(out)
        ref, rgrads, rpgrads = _torch_run(torch_fn, arrays, [m for _, m in heads], cot, tdt)
        check(name, "value" + sfx, out, ref, tol=rtol)
        pairs = list(zip(grads, rgrads))
        for pj, pt in zip(pgrads, rpgrads):
            pairs += [(pj[k], pt[k]) for k in pt]
        scale = max(float(np.max(np.abs(_np(r)), initial=0.0)) for _, r in pairs)
        for g, r in pairs:
            check(name, "grad" + sfx, g, r, scale=scale, tol=rtol)
        result = out if result is None else result
    return result


def logits(kind: str, b: int, k: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "extreme":
        x = rng.uniform(-50.0, 50.0, (b, k))
        x[:, 0], x[:, -1] = 50.0, -50.0
        return x.astype(np.float32)
    return (3.0 * rng.standard_normal((b, k))).astype(np.float32)


LOGIT_CASES = [(kind, b) for kind in ("normal", "extreme") for b in (1, 6)]


def _kl_sum(log_p, log_q):  # Σ p (log p − log q)
    return (log_p.exp() * (log_p - log_q)).sum()


# ---------------------------------------------------------------- cross-entropy and logit distillation
@pytest.mark.parametrize("kind,b", LOGIT_CASES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_hard(kind, b, eps):
    x = logits(kind, b)
    y = np.random.default_rng(1).integers(0, 10, b)
    val = check_call("cross_entropy (int labels)", lambda _, z: jl.cross_entropy(z, jnp.asarray(y), eps),
                     lambda _, z: tl.cross_entropy(z, torch.tensor(y), eps), [x])
    if eps:  # negative control: smoothing mass ε/(K−1) on the wrong classes only (another common convention)
        lp = F.log_softmax(torch.tensor(x), -1)
        q = torch.full_like(lp, eps / 9).scatter(1, torch.tensor(y)[:, None], 1 - eps)
        differs(val, -(q * lp).sum(-1).mean())


@pytest.mark.parametrize("kind,b", LOGIT_CASES)
@pytest.mark.parametrize("smooth", [False, True])
def test_cross_entropy_soft(kind, b, smooth):
    x = logits(kind, b)
    t = np.random.default_rng(2).dirichlet(np.ones(10), b).astype(np.float32)
    val = check_call("cross_entropy (soft targets)",
                     lambda _, z, q: jl.cross_entropy(z, q, 0.1, smooth_soft_targets=smooth),
                     lambda _, z, q: tl.cross_entropy(z, q, 0.1, smooth_soft_targets=smooth), [x, t])
    differs(val, tl.cross_entropy(torch.tensor(x), torch.tensor(t), 0.1, smooth_soft_targets=not smooth))


@pytest.mark.parametrize("kind,b", LOGIT_CASES)
def test_hard_distillation(kind, b):
    s, t = logits(kind, b, seed=3), logits(kind, b, seed=4)
    val = check_call("hard_distillation", lambda _, a, c: jl.hard_distillation(a, c),
                     lambda _, a, c: tl.hard_distillation(a, c), [s, t])
    # negative control: the teacher's softmax as soft target instead of its argmax
    differs(val, -(F.softmax(torch.tensor(t), -1) * F.log_softmax(torch.tensor(s), -1)).sum(-1).mean())


@pytest.mark.parametrize("kind,b", LOGIT_CASES)
@pytest.mark.parametrize("tau", [1.0, 3.0, 4.0])
@pytest.mark.parametrize("normalize", ["batch", "element"])
def test_soft_distillation(kind, b, tau, normalize):
    s, t = logits(kind, b, seed=5), logits(kind, b, seed=6)
    name = f"soft_distillation ({normalize})"
    val = check_call(name, lambda _, a, c: jl.soft_distillation(a, c, tau, normalize),
                     lambda _, a, c: tl.soft_distillation(a, c, tau, normalize), [s, t])
    ls, lt = F.log_softmax(torch.tensor(s) / tau, -1), F.log_softmax(torch.tensor(t) / tau, -1)
    denom = s.size if normalize == "element" else b
    # the explicit formula (no F.kl_div) agrees too
    check(name, "value", val, _kl_sum(lt, ls) * tau**2 / denom)
    differs(val, _kl_sum(ls, lt) * tau**2 / denom)  # swapped KL direction
    if tau != 1.0:
        differs(val, _kl_sum(lt, ls) / denom)  # missing τ²
    differs(val, _kl_sum(lt, ls) * tau**2 / (b if normalize == "element" else s.size))  # wrong normalisation


@pytest.mark.parametrize("kd", ["hard", "soft"])
@pytest.mark.parametrize("with_dist", [True, False])
@pytest.mark.parametrize("b", [1, 6])
def test_distillation_loss(kd, with_dist, b):
    c, d, t = logits("normal", b, seed=7), logits("extreme", b, seed=8), logits("normal", b, seed=9)
    y = np.random.default_rng(10).dirichlet(np.ones(10), b).astype(np.float32)  # MixUp-style soft labels
    kw = dict(alpha=0.3, kind=kd, tau=4.0, label_smoothing=0.1)
    name = f"distillation_loss ({kd})"

    def call(lib, c_, d_, t_, y_):
        return lib.distillation_loss(c_, d_ if with_dist else None, y_, t_, **kw)[0]

    val = check_call(name, lambda _, *a: call(jl, *a), lambda _, *a: call(tl, *a), [c, d, t, y])
    _, parts = jl.distillation_loss(jnp.asarray(c), jnp.asarray(d), jnp.asarray(y), jnp.asarray(t), **kw)
    _, p32 = tl.distillation_loss(*(torch.tensor(a) for a in (c, d, y, t)), **kw)
    for key in ("ce", "kd"):
        check(name, "value", parts[key], p32[key])
    # negative controls: α on the wrong term; τ instead of τ² (soft); the KD term on the class head (with a
    # distillation token)
    differs(val, 0.3 * p32["ce"] + 0.7 * p32["kd"])
    if kd == "soft":
        differs(val, 0.7 * p32["ce"] + 0.3 * p32["kd"] / kw["tau"])
    if with_dist:
        kd_cls = tl.distillation_loss(*(torch.tensor(a) for a in (c, c, y, t)), **kw)[1]["kd"]
        differs(val, 0.7 * p32["ce"] + 0.3 * kd_cls)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_alpha_at(schedule):
    kw = dict(num_epochs=20, schedule=schedule, alpha=0.5, alpha_start=0.1, alpha_end=0.6, warmup_epochs=5)
    epochs = np.arange(0, 23, 0.5)
    host = np.array([jl.alpha_at(float(e), **kw) for e in epochs])
    traced = np.asarray(jax.jit(jax.vmap(lambda e: jl.alpha_at(e, **kw)))(jnp.asarray(epochs, jnp.float32)))
    ref = np.array([tl.alpha_at(float(e), **kw) for e in epochs])
    check(f"alpha_at ({schedule})", "value", host, ref)
    check(f"alpha_at ({schedule})", "value", traced, ref)
    # negative control: progress measured from epoch 0 instead of from the end of the warm-up
    no_shift = np.array([0.0 if e < 5 else tl.alpha_at(float(e), **{**kw, "warmup_epochs": 0}) for e in epochs])
    if schedule != "constant":
        differs(host, no_shift)


# ---------------------------------------------------------------- projection head and resize
B, N, DS, DT, HID, PROJ = 3, 16, 12, 20, 16, 8


def _head_pair(in_dim, hidden, out, seed, ln_eps=1e-5):
    head = jl.ProjectionHead(in_dim, hidden, out, ln_eps=ln_eps, rngs=nnx.Rngs(seed))
    ref = tl.ProjectionHead(in_dim, hidden, out, ln_eps=ln_eps)
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in jax_to_torch(head).items()}, strict=True)
    return head, ref


@pytest.fixture(scope="module")
def heads():
    """Student heads DS→PROJ, teacher heads DT→PROJ, and student heads DS→DT for identity mode (2 layers)."""
    return ([_head_pair(DS, HID, PROJ, seed=20 + i) for i in range(2)],
            [_head_pair(DT, HID, PROJ, seed=30 + i) for i in range(2)],
            [_head_pair(DS, HID, DT, seed=40 + i) for i in range(2)])


def test_projection_head(heads):
    pair = heads[0][0]
    x = (2.0 * np.random.default_rng(11).standard_normal((B, N, DS))).astype(np.float32)
    out = check_call("ProjectionHead", lambda m, z: m[0](z), lambda m, z: m[0](z), [x], [pair])
    ref = pair[1]
    with torch.no_grad():  # negative controls: tanh GELU; LayerNorm eps 1e-6 instead of 1e-5 (needs small x)
        differs(out, ref.norm2(ref.fc2(F.gelu(ref.norm1(ref.fc1(torch.tensor(x))), approximate="tanh"))))
        xs = 1e-3 * torch.tensor(x)
        ref6 = copy.deepcopy(ref)
        ref6.norm1.eps = ref6.norm2.eps = 1e-6
        differs(pair[0](jnp.asarray(xs.numpy())), ref6(xs))


@pytest.mark.parametrize("src,dst", [((16, 16), (8, 8)), ((4, 4), (7, 7)), ((4, 6), (3, 5))])
def test_resize_tokens(src, dst):
    x = np.random.default_rng(12).standard_normal((1, src[0] * src[1], 3)).astype(np.float32)
    sg = None if src[0] == src[1] else src
    out = check_call("resize_tokens", lambda _, z: jl.resize_tokens(z, dst, sg),
                     lambda _, z: tl.resize_tokens(z, dst, sg), [x])
    xt = torch.tensor(x).reshape(1, *src, 3).permute(0, 3, 1, 2)
    wrong = F.interpolate(xt, size=dst, mode="bilinear", align_corners=True)  # negative control
    differs(out, wrong.permute(0, 2, 3, 1).reshape(1, -1, 3))
    if dst[0] < src[0]:
        aa = F.interpolate(xt, size=dst, mode="bilinear", align_corners=False, antialias=True)
        differs(out, aa.permute(0, 2, 3, 1).reshape(1, -1, 3))


# ---------------------------------------------------------------- token representation loss
def _tokens(b, seed=14, dt=DT):
    rng = np.random.default_rng(seed)
    s = [(2.0 * rng.standard_normal((b, N, DS))).astype(np.float32) for _ in range(2)]
    t = [(rng.standard_normal((b, N, dt)) + 0.5).astype(np.float32) for _ in range(2)]
    return s, t


def _token_case(heads, b, loss_type, mode):
    """mode: a teacher_mode, or 'unprojected' (no projector on either side: identity mode, equal dims)."""
    s_heads, t_heads, id_heads = heads
    sh = {"identity": id_heads, "unprojected": []}.get(mode, s_heads)
    th = [] if mode in ("identity", "unprojected") else t_heads
    kw = dict(loss_type=loss_type, teacher_mode="identity" if mode == "unprojected" else mode)

    def call(lib, mods, s0, s1, t0, t1):
        return lib.token_representation_loss([s0, s1], [t0, t1], mods[:len(sh)] or None, mods[len(sh):] or None,
                                             **kw)

    s, t = _tokens(b, dt=DS if mode == "unprojected" else DT)
    val = check_call(f"token_representation_loss ({loss_type})", lambda m, *a: call(jl, m, *a),
                     lambda m, *a: call(tl, m, *a), s + t, sh + th)
    with torch.no_grad():
        ps = [m(torch.tensor(a)) for (_, m), a in zip(sh, s)] if sh else [torch.tensor(a) for a in s]
        pt = [m(torch.tensor(a)) for (_, m), a in zip(th, t)] if th else [torch.tensor(a) for a in t]
    return val, ps, pt


# a batch of one without projectors (the heads are per-token, so B = 1 is not special for them; it costs compiles)
TOKEN_CASES = [(lt, mode, B) for lt in ("cosine", "mse") for mode in ("trainable", "frozen", "identity")]
TOKEN_CASES += [("cosine", "unprojected", B), ("cosine", "unprojected", 1), ("mse", "unprojected", 1)]


@pytest.mark.parametrize("loss_type,mode,b", TOKEN_CASES)
def test_token_representation_loss(heads, b, mode, loss_type):
    val, ps, pt = _token_case(heads, b, loss_type, mode)
    per = [(1 - F.cosine_similarity(p, q, dim=-1).mean()) if loss_type == "cosine" else F.mse_loss(p, q)
           for p, q in zip(ps, pt)]
    differs(val, sum(per))  # negative control: sum over layers instead of the mean


def test_token_representation_teacher_modes(heads):
    """'frozen' gives zero gradient to the teacher projectors and tokens; 'trainable' (peer) does not."""
    s, t = _tokens(B)
    (s_heads, t_heads, _) = heads
    gd = [nnx.split(h) for h, _ in t_heads]

    def grads(mode):
        f = lambda tp, tt: jl.token_representation_loss(  # noqa: E731
            [jnp.asarray(a) for a in s], tt, [h for h, _ in s_heads], [nnx.merge(g, p) for (g, _), p in zip(gd, tp)],
            teacher_mode=mode)
        return jax.tree.leaves(jax.grad(f, argnums=(0, 1))([p for _, p in gd], [jnp.asarray(a) for a in t]))

    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads("frozen"))
    assert all(float(jnp.max(jnp.abs(g))) > 0.0 for g in grads("trainable"))


@pytest.mark.parametrize("loss_type", ["cka_linear", "cka_rbf", "gram"])
def test_structural_token_losses(heads, loss_type):
    val, ps, pt = _token_case(heads, B, loss_type, "trainable")

    def uncentred(p, q):  # negative control: CKA without the centring H
        if loss_type == "cka_rbf":
            k, l_ = [torch.exp(-torch.cdist(z, z) ** 2 / (2 * torch.cdist(z, z).pow(2).sum((1, 2), True)
                                                         / (N * (N - 1)))) for z in (p, q)]
        else:
            k, l_ = p @ p.transpose(1, 2), q @ q.transpose(1, 2)
        return 1 - ((k * l_).sum((1, 2)) / (k.norm(dim=(1, 2)) * l_.norm(dim=(1, 2)))).mean()

    if loss_type == "gram":  # negative control: Gram of unnormalised tokens
        wrong = sum(F.mse_loss(p @ p.transpose(1, 2), q @ q.transpose(1, 2)) for p, q in zip(ps, pt)) / 2
    else:
        wrong = sum(uncentred(p, q) for p, q in zip(ps, pt)) / 2
    differs(val, wrong)


# ---------------------------------------------------------------- token correlation loss
CORR_CASES = [
    dict(pooled=True, kind="kl"),
    dict(pooled=False, kind="kl", full_reduction="row_mean"),
    dict(pooled=False, kind="kl", full_reduction="peer_batchmean"),
    dict(pooled=True, kind="frobenius", frobenius="mse"),
    dict(pooled=True, kind="frobenius", frobenius="peer"),
    dict(pooled=False, kind="frobenius", frobenius="mse"),
    dict(pooled=False, kind="frobenius", frobenius="peer"),
]


def _corr_name(kw):
    extra = kw.get("full_reduction", kw.get("frobenius"))
    mode = "pooled" if kw["pooled"] else "full"
    return f"token_correlation_loss ({mode}, {kw['kind']}{', ' + extra if extra else ''})"


# every variant at B = 3 and τ ∈ {0.1, 1}; a batch of one for the KL forms and one Frobenius form
CORR_PARAMS = [(c, B, tau) for c in CORR_CASES for tau in (0.1, 1.0)] + [
    (CORR_CASES[i], 1, 0.1) for i in (0, 1, 6)]


@pytest.mark.parametrize("case,b,tau", CORR_PARAMS, ids=lambda v: _corr_name(v) if isinstance(v, dict) else str(v))
def test_token_correlation_loss(b, tau, case):
    rng = np.random.default_rng(15)
    s = (rng.standard_normal((b, N, DS)) + 0.3).astype(np.float32)
    t = (rng.standard_normal((b, N, DT)) + 0.3).astype(np.float32)
    kw = {k: v for k, v in case.items() if k not in ("pooled", "kind")}
    pooled, kind = case["pooled"], case["kind"]
    x64 = pooled and kind == "kl" and tau == 1.0 and b == B  # the ill-conditioned case, also in float64
    val = check_call(_corr_name(case), lambda _, a, c: jl.token_correlation_loss(a, c, tau, pooled, kind, **kw),
                     lambda _, a, c: tl.token_correlation_loss(a, c, tau, pooled, kind, **kw), [s, t],
                     tol=CORR_RTOL, x64=x64)
    if pooled and b == 1:
        assert val == 0.0  # a 1×1 softmax is exactly 1: every variant is 0
        return
    cs, ct = tl.correlation_matrix(torch.tensor(s), pooled), tl.correlation_matrix(torch.tensor(t), pooled)
    ls, lt = F.log_softmax(cs / tau, -1), F.log_softmax(ct / tau, -1)
    rows = b * (1 if pooled else N)
    denom = b if kw.get("full_reduction") == "peer_batchmean" else rows
    if kind == "kl":
        differs(val, _kl_sum(ls, lt) / denom, CORR_RTOL)  # swapped KL direction
        if tau != 1.0:
            differs(val, _kl_sum(F.log_softmax(ct, -1), F.log_softmax(cs, -1)) / denom, CORR_RTOL)  # τ missing
        if not pooled:  # the other full-mode reduction
            differs(val, _kl_sum(lt, ls) / (b if denom == rows else rows), CORR_RTOL)
    else:
        d = ls.exp() - lt.exp()
        mse = kw["frobenius"] == "mse"
        differs(val, d.norm() / d.numel() if mse else d.pow(2).mean(), CORR_RTOL)  # the other form
        differs(val, (cs - ct).pow(2).mean() if mse else (cs - ct).norm() / d.numel(), CORR_RTOL)  # raw C, no softmax


# ---------------------------------------------------------------- full self-supervised objective
@pytest.mark.parametrize("epoch", [3, 12])
@pytest.mark.parametrize("pooled", [True, False])
def test_ss_distillation_loss(heads, epoch, pooled):
    s_heads, t_heads, _ = heads
    rng = np.random.default_rng(16)
    lg = logits("normal", B, seed=17)
    y = rng.integers(0, 10, B)
    s_layers, _ = _tokens(B, seed=18)
    t_layers = [rng.standard_normal((B, 4 * N, DT)).astype(np.float32) for _ in range(2)]  # 8×8 → student 4×4
    # final tokens with a shared mean direction, as real features have (pooled rows are then not one-hot)
    s_fin = (rng.standard_normal((B, N, DS)) + 0.5).astype(np.float32)
    t_fin = (rng.standard_normal((B, 4 * N, DT)) + 0.5).astype(np.float32)
    kw = dict(epoch=epoch, lambda_tok=1.0, lambda_rel=0.5, rel_warmup_epochs=10, label_smoothing=0.1, pooled=pooled)

    def call(lib, labels, mods, lg_, s0, s1, t0, t1, sf, tf):
        return lib.ss_distillation_loss(lg_, labels, [s0, s1], [t0, t1], sf, tf, mods[:2], mods[2:], **kw)

    name = f"ss_distillation_loss ({'pooled' if pooled else 'full'})"
    arrays = [lg, *s_layers, *t_layers, s_fin, t_fin]
    val = check_call(name, lambda m, *a: call(jl, jnp.asarray(y), m, *a)[0],
                     lambda m, *a: call(tl, torch.tensor(y), m, *a)[0], arrays, s_heads + t_heads)
    jm = [h for h, _ in s_heads + t_heads]
    _, parts = call(jl, jnp.asarray(y), jm, *map(jnp.asarray, arrays))
    with torch.no_grad():
        _, p32 = call(tl, torch.tensor(y), [m for _, m in s_heads + t_heads], *map(torch.tensor, arrays))
    for key in ("ce", "tok", "rel", "lambda_rel"):
        check(name, "value", parts[key], p32[key], tol=CORR_RTOL if key == "rel" else RTOL)
    assert float(parts["lambda_rel"]) == (0.0 if epoch < 10 else 0.5)
    # negative control: the relation term switched on in stage A (or off in stage B)
    differs(val, p32["ce"] + p32["tok"] + (0.5 if epoch < 10 else 0.0) * p32["rel"])

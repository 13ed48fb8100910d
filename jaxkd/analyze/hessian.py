"""The Hessian of a trained model's loss at its parameters, through Hessian-vector products (LATER.md §4.3, §7.1).

The loss: the mean cross-entropy, without label smoothing, of the model's inference logits (what it predicts with:
a DeiT's cls / dist / average head as its ``inference_mode`` says) over n samples, in eval mode (BatchNorm on its
running statistics, dropout and drop path off), as a function of every ``nnx.Param`` of the model (a DeiT's unused
head included: its block of the Hessian is then zero). The original used PyHessian with ``nn.CrossEntropyLoss()`` in
eval mode; its trace call could not run (§7.1).

Hessian-vector products are forward-over-reverse, ``jax.jvp(jax.grad(loss), (θ,), (v,))``, jitted, summed over
chunks of the n samples (``lax.scan``), so that memory is that of one chunk: Hv = Σ_chunks H_chunk·v with each
chunk's loss weighted 1/n. Vectors are flat (``jax.flatten_util.ravel_pytree`` of the parameters).

* :func:`hutchinson_trace`: tr(H) ≈ mean of vᵀHv over probes v with E[vvᵀ] = I (Rademacher ±1 by default). Stops
  when the standard error of the mean (sample std / √m, ddof 1) falls below ``rtol``·|mean| once ``min_probes``
  were drawn, or at ``max_probes``; reports the estimate, its standard error, the probes used and whether the
  tolerance was met.
* :func:`top_eigenvalues`: the k largest (algebraic) eigenvalues by ARPACK's implicitly restarted Lanczos
  (``scipy.sparse.linalg.eigsh``, which reorthogonalises its Lanczos basis) on the HVP operator, with each Ritz
  pair's relative residual ‖Hv − λv‖ / |λ| measured by one more HVP.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

__all__ = ["LOSS_DESCRIPTION", "HessianProblem", "rademacher_probe", "gaussian_probe", "hutchinson_trace",
           "top_eigenvalues"]

Array = jax.Array

LOSS_DESCRIPTION = ("mean cross-entropy of the inference logits over the n samples, no label smoothing, eval mode "
                    "(BatchNorm running statistics, no dropout or drop path), w.r.t. every nnx.Param")


def _cross_entropy_sum(logits: Array, labels: Array, weights: Array) -> Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    return jnp.sum(weights.astype(nll.dtype) * nll)


@partial(jax.jit, static_argnums=(0,))
def _scan_loss(loss, params, rest, xs, ys, ws):
    def body(acc, batch):
        return acc + loss(params, rest, *batch), None

    return jax.lax.scan(body, jnp.zeros((), jnp.result_type(*jax.tree.leaves(params))), (xs, ys, ws))[0]


@partial(jax.jit, static_argnums=(0, 1))
def _scan_hvp(loss, unravel, params, rest, xs, ys, ws, v_flat):
    v = unravel(v_flat)

    def body(acc, batch):
        grad = lambda p: jax.grad(loss)(p, rest, *batch)  # noqa: E731
        _, hv = jax.jvp(grad, (params,), (v,))
        return acc + ravel_pytree(hv)[0], None

    return jax.lax.scan(body, jnp.zeros_like(v_flat), (xs, ys, ws))[0]


@dataclasses.dataclass
class HessianProblem:
    """A loss ``loss(params, rest, image, label, weight) -> Σ_i weight_i·loss_i`` at ``params`` over n samples
    held in chunks: images (C, b, ...), labels (C, b), weights (C, b) = 1/n for a sample, 0 for the padding of the
    last chunk; ``rest``: what else the loss reads (a model's non-parameter state), an argument of the jitted
    functions rather than a constant baked into them. ``dim``: the number of parameters (the flat vectors' length).
    """

    loss: Callable[..., Array]
    params: Any
    rest: Any
    images: Array
    labels: Array
    weights: Array

    def __post_init__(self):
        flat, self._unravel = ravel_pytree(self.params)
        self.dim = int(flat.size)
        self.dtype = flat.dtype
        self.hvp_calls = 0

    @classmethod
    def from_model(cls, model: nnx.Module, images, labels, *, chunk_size: int = 64,
                   forward: Callable[[nnx.Module, Array], Array] | None = None) -> HessianProblem:
        """The problem of `model` (put in eval mode, and its layers in their forward-mode-differentiable spelling:
        ``forward_ad``, same values) on images (n, H, W, C) float and labels (n,) int.
        ``forward(model, image) -> logits`` defaults to calling the model (its inference logits)."""
        model.eval()
        # the plain spellings of the layers whose custom VJPs (chosen for XLA:CPU's speed) forbid forward mode
        model.set_attributes(forward_ad=True, raise_if_not_found=False)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # own containers: nnx.split's state shares the model's Variable objects, so a later change to the model
        # would otherwise change the problem
        params, rest = jax.tree.map(lambda a: a, params), jax.tree.map(lambda a: a, rest)
        fwd = forward if forward is not None else (lambda m, x: m(x))

        def loss(p, r, image, label, weight):
            return _cross_entropy_sum(fwd(nnx.merge(graphdef, p, r), image), label, weight)

        images, labels = jnp.asarray(images), jnp.asarray(labels)
        n = int(labels.shape[0])
        if n < 1 or images.shape[0] != n:
            raise ValueError(f"need n >= 1 images and as many labels, got {images.shape[0]} and {n}")
        chunks = -(-n // max(1, int(chunk_size)))
        b = -(-n // chunks)  # chunks of (nearly) equal size: at most chunks - 1 padding samples
        pad = chunks * b - n
        dtype = jnp.result_type(*jax.tree.leaves(params))
        weights = jnp.concatenate([jnp.full((n,), 1.0 / n, dtype), jnp.zeros((pad,), dtype)])
        images = jnp.concatenate([images, jnp.repeat(images[:1], pad, axis=0)]) if pad else images
        labels = jnp.concatenate([labels, jnp.repeat(labels[:1], pad, axis=0)]) if pad else labels
        return cls(loss, params, rest, images.reshape(chunks, b, *images.shape[1:]), labels.reshape(chunks, b),
                   weights.reshape(chunks, b))

    @property
    def num_samples(self) -> int:
        return int(jnp.sum(self.weights > 0))

    @property
    def chunk_size(self) -> int:
        return int(self.labels.shape[1])

    def flat_params(self) -> Array:
        """The parameters as one flat vector (``ravel_pytree`` order)."""
        return ravel_pytree(self.params)[0]

    def unflatten(self, flat: Array):
        """A flat vector as a tree shaped like the parameters (an ``nnx.State`` for a model's)."""
        return self._unravel(jnp.asarray(flat, self.dtype))

    def value(self, flat: Array | None = None) -> Array:
        """The loss (mean CE over the n samples) at `flat` parameters (default: the model's)."""
        params = self.params if flat is None else self._unravel(flat)
        return _scan_loss(self.loss, params, self.rest, self.images, self.labels, self.weights)

    def hvp(self, v: Array) -> Array:
        """H·v for a flat vector v of length ``dim`` (the parameters' dtype): forward-over-reverse, chunked."""
        self.hvp_calls += 1
        return _scan_hvp(self.loss, self._unravel, self.params, self.rest, self.images, self.labels, self.weights,
                         jnp.asarray(v, self.dtype))


def rademacher_probe(key: Array, dim: int, dtype) -> Array:
    """A vector of independent ±1 entries (E[vvᵀ] = I)."""
    return jax.random.rademacher(key, (dim,), dtype)


def gaussian_probe(key: Array, dim: int, dtype) -> Array:
    """A standard normal vector (E[vvᵀ] = I; a larger variance of vᵀHv than Rademacher's)."""
    return jax.random.normal(key, (dim,), dtype)


PROBES = {"rademacher": rademacher_probe, "gaussian": gaussian_probe}


def hutchinson_trace(hvp: Callable[[Array], Array], dim: int, *, dtype=jnp.float32, seed: int = 0,
                     probe: str | Callable = "rademacher", min_probes: int = 10, max_probes: int = 100,
                     rtol: float = 0.05, callback: Callable[[int, float, float], None] | None = None) -> dict:
    """Hutchinson's estimate of tr(H) (see the module docstring).

    Args:
      hvp: v (dim,) -> H·v.
      probe: 'rademacher', 'gaussian', or a function (key, dim, dtype) -> v with E[vvᵀ] = I.
      min_probes, max_probes: the stopping rule's bounds (2 <= min_probes <= max_probes).
      rtol: stop once stderr <= rtol·|mean| (after min_probes).
      callback: called after each probe with (probes so far, running mean, running stderr or nan).
    Returns:
      dict(trace, stderr, probes, converged, samples (every vᵀHv), min_probes, max_probes, rtol, probe, seed,
      wall_s).
    """
    if not 2 <= min_probes <= max_probes:
        raise ValueError(f"need 2 <= min_probes <= max_probes, got {min_probes}, {max_probes}")
    draw = PROBES[probe] if isinstance(probe, str) else probe
    key = jax.random.key(seed)
    samples: list[float] = []
    mean = se = math.nan
    converged = False
    t0 = time.perf_counter()
    for i in range(max_probes):
        v = draw(jax.random.fold_in(key, i), dim, dtype)
        samples.append(float(jnp.vdot(v, hvp(v))))
        m = len(samples)
        mean = float(np.mean(samples))
        se = float(np.std(samples, ddof=1) / math.sqrt(m)) if m > 1 else math.nan
        if callback is not None:
            callback(m, mean, se)
        if m >= min_probes and se <= rtol * abs(mean):
            converged = True
            break
    return {"trace": mean, "stderr": se, "probes": len(samples), "converged": converged, "samples": samples,
            "min_probes": min_probes, "max_probes": max_probes, "rtol": rtol,
            "probe": probe if isinstance(probe, str) else getattr(probe, "__name__", "custom"), "seed": seed,
            "wall_s": time.perf_counter() - t0}


def top_eigenvalues(hvp: Callable[[Array], Array], dim: int, k: int = 5, *, dtype=jnp.float32, seed: int = 0,
                    tol: float = 1e-4, maxiter: int | None = None, ncv: int | None = None,
                    callback: Callable[[int], None] | None = None) -> dict:
    """The k largest eigenvalues of H by Lanczos (``scipy.sparse.linalg.eigsh``, which='LA'), descending.

    Args:
      hvp: v (dim,) -> H·v; ARPACK works in float64 on the host, each product in `dtype` on the device.
      tol: ARPACK's relative accuracy of the Ritz values (0: machine precision).
      maxiter: restarts allowed (ARPACK's default: 10·dim); ncv: Lanczos vectors kept (default max(2k+1, 20)).
      callback: called with the number of HVPs after each.
    Returns:
      dict(eigenvalues (k, descending), residuals (‖Hv − λv‖/|λ| each), converged (False: ARPACK stopped at maxiter
      and these are the pairs it had), hvps (products used, the residual checks included), k, tol, seed, wall_s).
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    if not 1 <= k < dim:
        raise ValueError(f"top_eigenvalues needs 1 <= k < dim, got k={k}, dim={dim}")
    calls = [0]

    def matvec(v):
        calls[0] += 1
        out = np.asarray(hvp(jnp.asarray(np.ravel(v), dtype)), np.float64)
        if callback is not None:
            callback(calls[0])
        return out

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    t0 = time.perf_counter()
    try:
        vals, vecs = eigsh(op, k=k, which="LA", tol=tol, maxiter=maxiter, ncv=ncv, v0=v0)
        converged = True
    except ArpackNoConvergence as e:
        vals, vecs, converged = e.eigenvalues, e.eigenvectors, False
    order = np.argsort(vals)[::-1]
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    residuals = []
    for lam, vec in zip(vals, vecs.T):
        r = matvec(vec) - lam * vec
        residuals.append(float(np.linalg.norm(r) / max(abs(lam), 1e-300)))
    return {"eigenvalues": [float(v) for v in vals], "residuals": residuals, "converged": converged,
            "hvps": calls[0], "k": k, "tol": tol, "seed": seed, "wall_s": time.perf_counter() - t0}

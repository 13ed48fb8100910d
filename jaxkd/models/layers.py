"""Shared layers with PyTorch semantics: BatchNorm, weightless placeholders, torch-default initialisers.

Everything here is NHWC / channels-last and never imports torch.

* :class:`BatchNorm` -- torch ``nn.BatchNorm{1,2}d`` semantics (biased batch variance for normalising,
  UNBIASED batch variance in the running estimate, torch momentum convention, ``num_batches_tracked``).
* :class:`Activation`, :class:`MaxPool2d`, :class:`GlobalAvgPool` -- weightless modules that occupy an index
  of an ``nnx.Sequential`` exactly where the torch ``nn.Sequential`` has ReLU / GELU / MaxPool2d, so that
  parameter paths equal torch state-dict keys (see ``jaxkd.interop``).
* :func:`gelu_exact` -- erf GELU, identical to ``torch.nn.GELU()``.
* :func:`torch_conv` / :func:`torch_linear` -- ``nnx.Conv`` / ``nnx.Linear`` initialised like PyTorch's
  defaults (kaiming-uniform with a = sqrt(5) => U(+-1/sqrt(fan_in)) for weight and bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

# kaiming_uniform_(a=sqrt(5)): bound = gain*sqrt(3/fan_in) with gain^2 = 2/(1+5) = 1/3, i.e. U(+-1/sqrt(fan_in)).
# variance_scaling(scale, 'fan_in', 'uniform') samples U(+-sqrt(3*scale/fan_in)), so scale = 1/3 is the same law.
# fan_in of an HWIO conv kernel is H*W*I (in_axis=-2, out_axis=-1, the rest is the receptive field).
torch_default_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Callable[..., Array]:
    """Bias initialiser of torch ``nn.Linear`` / ``nn.Conv2d``: U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
    if fan_in <= 0:
        raise ValueError(f"fan_in must be positive for the torch bias init, got {fan_in}")
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key: Array, shape, dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def torch_conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = False,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """``nnx.Conv`` equal to ``torch.nn.Conv2d(in, out, k, stride, padding=p, bias=use_bias)``.

    Padding is explicit ``((p, p), (p, p))`` (never 'SAME', which differs from torch for stride 2).
    Kernel HWIO (k, k, in, out); input/output NHWC in ``dtype``.
    """
    fan_in = in_features * kernel_size * kernel_size
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=torch_default_kernel_init,
        bias_init=torch_default_bias_init(fan_in),
        rngs=rngs,
    )


def torch_linear(
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``nnx.Linear`` equal to ``torch.nn.Linear(in, out, bias=use_bias)`` (kernel (in, out) = torch weight.T)."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=torch_default_kernel_init,
        bias_init=torch_default_bias_init(in_features),
        rngs=rngs,
    )


def gelu_exact(x: Array) -> Array:
    """Exact (erf) GELU, elementwise, same shape/dtype as ``x``; equals ``torch.nn.GELU()`` (not the tanh form)."""
    return jax.nn.gelu(x, approximate=False)


def relu(x: Array) -> Array:
    """ReLU, ``max(x, 0)``, elementwise: the values and gradients of ``jax.nn.relu`` and ``torch.relu`` (gradient 0
    at 0; NaN stays NaN), written as a select.

    Why the spelling: XLA counts ``maximum(x, 0)`` as a unary op and so may recompute it, and every elementwise op
    behind it back through the residual stream, inside each consumer that can fuse it. On XLA:CPU such a consumer is
    the batch<->channel transposed copy of the input that every weight-gradient convolution needs (their share of
    the CIFAR CNN step: ``python -m jaxkd.bench profile --models cifar_cnn``; figures in BENCH.md). A
    select reads two full-size operands, which XLA does not duplicate, so the activation is computed once and the
    copies are plain transposes. On GPUs both spellings are one elementwise op inside a fusion (not measured there).
    """
    return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)


class Activation(nnx.Module):
    """Weightless placeholder holding an elementwise function (ReLU, GELU, Sigmoid, ...).

    It occupies a Sequential index exactly like a torch ``nn.ReLU()`` does, keeping torch index numbering.
    """

    def __init__(self, fn: Callable[[Array], Array]):
        if not callable(fn):
            raise ValueError(f"Activation needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, x: Array) -> Array:
        return self.fn(x)


class MaxPool2d(nnx.Module):
    """torch ``nn.MaxPool2d(k)`` (stride k, no padding, floor) on NHWC input: (B,H,W,C) -> (B,H//k,W//k,C).

    ``forward_ad`` (default False): when True, the plain window maximum (same values), through which forward-mode
    autodiff can go, which :func:`max_pool_first_max`'s custom VJP does not allow (jaxkd.analyze's
    Hessian-vector products set it, as for ``jaxkd.models.attention.Linear``); its gradient splits ties evenly
    instead of sending them to the first maximum (a set of inputs of measure zero)."""

    forward_ad = False

    def __init__(self, kernel_size: int):
        self.kernel_size = int(kernel_size)

    def __call__(self, x: Array) -> Array:
        if self.forward_ad:
            k = self.kernel_size
            b, h, w, c = x.shape
            return x[:, :h // k * k, :w // k * k].reshape(b, h // k, k, w // k, k, c).max(axis=(2, 4))
        return max_pool_first_max(x, self.kernel_size)


def max_pool_first_max(x: Array, k: int) -> Array:
    """torch MaxPool2d(k) (stride k, no padding, floor) on NHWC (B,H,W,C) -> (B,H//k,W//k,C).

    Forward: a reshape and a max over each k×k window. Gradient: all of it to the FIRST maximum of each window
    (row-major), as torch and XLA's select_and_scatter do, computed as an argmax one-hot -- elementwise work that
    fuses, instead of the variadic reduce-window over four iota index arrays plus a scatter that JAX emits for
    the gradient of a reduce-window max on CPU (its share of the MNIST CNN step: BENCH.md).
    """
    b, h, w, c = x.shape
    ho, wo = h // k, w // k

    @jax.custom_vjp
    def pool(a):
        return a[:, :ho * k, :wo * k].reshape(b, ho, k, wo, k, c).max(axis=(2, 4))

    def fwd(a):
        return pool(a), a

    def bwd(a, g):
        win = a[:, :ho * k, :wo * k].reshape(b, ho, k, wo, k, c).transpose(0, 1, 3, 5, 2, 4)
        first = jnp.argmax(win.reshape(b, ho, wo, c, k * k), axis=-1)  # first maximum, as torch
        d = (first[..., None] == jnp.arange(k * k)).astype(g.dtype) * g[..., None]
        d = d.reshape(b, ho, wo, c, k, k).transpose(0, 1, 4, 2, 5, 3).reshape(b, ho * k, wo * k, c)
        return (jnp.pad(d, ((0, 0), (0, h - ho * k), (0, w - wo * k), (0, 0))),)

    pool.defvjp(fwd, bwd)
    return pool(x)


def global_avg_pool(x: Array) -> Array:
    """Global average pool, NHWC (B,H,W,C) -> (B,C): mean over H and W (torch AdaptiveAvgPool2d(1)+flatten)."""
    return jnp.mean(x, axis=(1, 2))


class BatchNorm(nnx.Module):
    """Batch normalisation with PyTorch semantics over channels-last input (..., C).

    Train mode (``use_running_average=False``, set by ``model.train()``): normalise with the batch mean and
    the BIASED batch variance over all axes but the last (N,H,W for NHWC), then update
    ``mean <- (1-m)*mean + m*batch_mean`` and ``var <- (1-m)*var + m*batch_var*n/(n-1)`` (unbiased, as torch
    stores it), ``num_batches_tracked += 1``; m = ``momentum`` (0.1). Eval mode (``model.eval()``): normalise
    with the running statistics, no state change.

    Statistics and normalisation are computed in float32 (float64 if the input is float64) whatever the
    compute dtype; the output is cast to ``dtype`` (or the input dtype if ``dtype`` is None).
    Variables: ``scale``, ``bias`` (nnx.Param, (C,), param_dtype); ``mean``, ``var`` (nnx.BatchStat, (C,),
    param_dtype); ``num_batches_tracked`` (nnx.BatchStat, int32 scalar).
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        use_running_average: bool = False,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        if num_features <= 0:
            raise ValueError(f"BatchNorm num_features must be positive, got {num_features}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1] (torch convention), got {momentum}")
        del rngs  # deterministic init; accepted for a uniform constructor signature
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.use_running_average = bool(use_running_average)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: Array, *, use_running_average: bool | None = None) -> Array:
        """x: (..., C) float -> same shape, dtype ``self.dtype`` (input dtype if None)."""
        if x.ndim < 2 or x.shape[-1] != self.num_features:
            raise ValueError(
                f"BatchNorm expects channels-last input (..., {self.num_features}), got shape {x.shape}"
            )
        use_ra = self.use_running_average if use_running_average is None else use_running_average
        out_dtype = self.dtype if self.dtype is not None else x.dtype
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(stat_dtype)
        axes = tuple(range(x.ndim - 1))
        if use_ra:
            mean = self.mean[...].astype(stat_dtype)
            var = self.var[...].astype(stat_dtype)
        else:
            n = 1
            for a in axes:
                n *= x.shape[a]
            if n < 2:
                raise ValueError(
                    f"BatchNorm in train mode needs more than 1 value per channel, got input shape {x.shape}; "
                    "use a larger batch or call model.eval()"
                )
            mean = jnp.mean(xs, axis=axes)
            var = jnp.mean(jnp.square(xs - mean), axis=axes)  # biased, used for normalising
            m = self.momentum
            unbiased = jax.lax.stop_gradient(var) * (n / (n - 1))
            bm = jax.lax.stop_gradient(mean)
            pd = self.mean[...].dtype
            self.mean[...] = ((1.0 - m) * self.mean[...].astype(stat_dtype) + m * bm).astype(pd)
            self.var[...] = ((1.0 - m) * self.var[...].astype(stat_dtype) + m * unbiased).astype(pd)
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        inv = jax.lax.rsqrt(var + self.epsilon)
        y = (xs - mean) * (inv * self.scale[...].astype(stat_dtype)) + self.bias[...].astype(stat_dtype)
        return y.astype(out_dtype)


def cast_module(model: nnx.Module, dtype: Any, *, param_dtype: Any | None = None) -> nnx.Module:
    """Set the compute ``dtype`` (and ``param_dtype``) of every submodule and cast floating nnx.Param /
    nnx.BatchStat values to ``param_dtype`` (default ``dtype``); in place, returns ``model``.

    Integer variables (e.g. ``num_batches_tracked``) and rng state are untouched. For float64 call it inside
    ``with jax.enable_x64(True):``.
    """
    param_dtype = dtype if param_dtype is None else param_dtype
    model.set_attributes(dtype=dtype, param_dtype=param_dtype, raise_if_not_found=False)
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    state = jax.tree.map(
        lambda a: a.astype(param_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state
    )
    nnx.update(model, state)
    return model

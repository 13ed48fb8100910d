"""The parity suite's matmul / convolution precision, on every backend (never the trainer's: jaxkd.train sets its own).

Why: XLA computes float32 dots and convolutions at the precision ``jax_default_matmul_precision`` asks for, and its
default (``None`` == ``'default'`` == ``'bfloat16'`` == ``lax.Precision.DEFAULT``) means *the backend's fastest*:
full float32 on XLA:CPU (which ignores the setting), TF32 (10-bit mantissa operands, ~1e-3 relative error) on
Ampere/Hopper GPUs, one bf16 pass on TPU. The suite's float32 tolerances (1e-5 and below) were set on CPU; on a GPU
they need ``'highest'`` (== ``'float32'``, ``lax.Precision.HIGHEST``: true float32 there). ``'tensorfloat32'`` /
``'high'`` is ``lax.Precision.HIGH`` (TF32 on GPUs). PyTorch likewise uses TF32 for cuDNN convolutions by default
(``torch.backends.cudnn.allow_tf32``) and for cuBLAS matmuls when asked (``allow_tf32`` /
``set_float32_matmul_precision``): :func:`full_precision` turns all of that off. (The suite's torch tensors live on
the CPU, where these flags change nothing -- except the bf16 part, which runs torch on CUDA when there is a GPU.)

Also here, for the negative control that shows the suite *needs* the setting (runnable on CPU, where the flag is a
no-op): :func:`emulate_reduced_precision` evaluates a function with every float32 dot / convolution operand rounded
to TF32 (or bf16) -- what XLA:GPU's default does -- and :func:`hlo_precisions` reads the precision each dot /
convolution of a lowered computation carries (backend-independent: what a GPU compile would receive).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
from jax import lax

#: what the parity suite sets for its float32 comparisons (jax's 'float32' is the same lax.Precision.HIGHEST)
FP32_MATMUL_PRECISION = "highest"
#: jax_default_matmul_precision values that mean full float32 (lax.Precision.HIGHEST)
FULL_FP32_NAMES = ("highest", "float32", "F32_F32_F32")

_TORCH_FLAGS = ("cuda.matmul.allow_tf32", "cudnn.allow_tf32")


# ------------------------------------------------------------------------------------------------- the setting
def _torch():
    try:
        import torch
    except ImportError:  # the parity suite needs torch, but keep this module importable without it
        return None
    return torch


def torch_precision_state() -> dict[str, Any]:
    """The torch flags :func:`set_full_precision` touches (None where this torch does not have one)."""
    torch = _torch()
    if torch is None:
        return {}
    state = {"float32_matmul_precision": torch.get_float32_matmul_precision()}
    for name in _TORCH_FLAGS:
        obj, attr = torch.backends, name.split(".")
        try:
            for a in attr[:-1]:
                obj = getattr(obj, a)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch >= 2.9 suggests its fp32_precision API
                state[name] = bool(getattr(obj, attr[-1]))
        except (AttributeError, RuntimeError):  # RuntimeError: legacy and fp32_precision API mixed
            state[name] = None
    return state


def _set_torch_state(state: dict[str, Any]) -> None:
    torch = _torch()
    if torch is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _TORCH_FLAGS:
            if state.get(name) is None:
                continue
            obj, attr = torch.backends, name.split(".")
            for a in attr[:-1]:
                obj = getattr(obj, a)
            setattr(obj, attr[-1], state[name])
        if state.get("float32_matmul_precision"):
            torch.set_float32_matmul_precision(state["float32_matmul_precision"])


def set_full_precision() -> Callable[[], None]:
    """Full float32 matmuls and convolutions in jax (global ``jax_default_matmul_precision='highest'``) and torch
    (no TF32 in cuBLAS or cuDNN, ``set_float32_matmul_precision('highest')``). Returns the function that puts back
    what was there before."""
    old_jax = jax.config.jax_default_matmul_precision
    old_torch = torch_precision_state()
    jax.config.update("jax_default_matmul_precision", FP32_MATMUL_PRECISION)
    _set_torch_state({"float32_matmul_precision": "highest", **{name: False for name in _TORCH_FLAGS}})

    def restore() -> None:
        jax.config.update("jax_default_matmul_precision", old_jax)
        _set_torch_state(old_torch)

    return restore


@contextlib.contextmanager
def full_precision():
    """:func:`set_full_precision` for the duration of the block."""
    restore = set_full_precision()
    try:
        yield
    finally:
        restore()


def is_full_precision() -> bool:
    """True when both jax (globally and in this thread) and torch are at full float32."""
    jax_ok = jax.config.jax_default_matmul_precision in FULL_FP32_NAMES
    t = torch_precision_state()
    torch_ok = (not t or (t["float32_matmul_precision"] == "highest"
                          and all(t.get(name) in (False, None) for name in _TORCH_FLAGS)))
    return jax_ok and torch_ok


def describe() -> str:
    t = torch_precision_state()
    return (f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision!r}, "
            + ", ".join(f"torch {k}={v!r}" for k, v in t.items()))


# --------------------------------------------------------------------------------- what a compile would receive
_DOT_RE = re.compile(r"stablehlo\.dot_general\b.*?(?:precision = \[(\w+), (\w+)\])?\s*:\s*\(tensor<[^>]*x(\w+)>")
_CONV_RE = re.compile(r"stablehlo\.convolution\b.*?(?:precision_config = \[#stablehlo<precision (\w+)>, "
                      r"#stablehlo<precision (\w+)>\])?\}?\s*:\s*\(tensor<[^>]*x(\w+)>")


def hlo_precisions(fn: Callable, *args, dtype: str = "f32") -> list[str]:
    """The precision of every dot_general / convolution with `dtype` lhs in ``jax.jit(fn).lower(*args)`` (StableHLO;
    'DEFAULT' where the op carries none): what XLA on any backend is asked to do."""
    text = jax.jit(fn).lower(*args).as_text()
    out = []
    for line in text.splitlines():
        for rx in (_DOT_RE, _CONV_RE):
            m = rx.search(line)
            if m and m.group(3) == dtype:
                out.append(m.group(1) or "DEFAULT")
                if m.group(1) and m.group(2) != m.group(1):
                    out[-1] = f"{m.group(1)},{m.group(2)}"
    return out


# ------------------------------------------------------------------------------ emulating reduced precision
def round_mantissa(x: jax.Array, bits: int) -> jax.Array:
    """float32 `x` rounded (to nearest, ties to even) to `bits` explicit mantissa bits: 10 = TF32, 7 = bf16."""
    if x.dtype != jnp.float32 or bits >= 23:
        return x
    shift = 23 - bits
    u = lax.bitcast_convert_type(x, jnp.uint32)
    bias = ((u >> shift) & jnp.uint32(1)) + jnp.uint32((1 << (shift - 1)) - 1)
    u = (u + bias) & jnp.uint32(~((1 << shift) - 1) & 0xFFFFFFFF)
    return lax.bitcast_convert_type(u, jnp.float32)


_REDUCED_OPS = ("dot_general", "conv_general_dilated")
_INLINE = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
           "remat", "checkpoint")


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is not None:
            return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, ())
    return None


def _eval(jaxpr, consts, args, bits: int, counter: list[int]):
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn) if name in _INLINE else None
        if sub is not None:  # forward semantics of these call-like primitives: evaluate their body, rounded too
            body, body_consts = sub
            outs = _eval(body, body_consts, invals[len(invals) - len(body.invars):], bits, counter)
        else:
            if name in _REDUCED_OPS:
                operands = [round_mantissa(x, bits) for x in invals[:2]]
                counter[0] += sum(x.dtype == jnp.float32 for x in invals[:2]) > 0
                invals = operands + invals[2:]
            outs = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def emulate_reduced_precision(fn: Callable, mantissa_bits: int = 10) -> Callable:
    """`fn` (forward only) with every float32 dot_general / conv_general_dilated operand rounded to `mantissa_bits`
    (10: TF32, XLA:GPU's default on Ampere and later; 7: one bf16 pass, TPU's), accumulating in float32 as the
    hardware does. Jitted; the returned function's ``.rounded_ops`` (after a call) counts the rounded ops.
    Control flow (cond / scan / while) is evaluated as is, unrounded."""
    counter = [0]

    def run(*args):
        closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        counter[0] = 0
        flat = jax.tree.leaves(args)
        out = _eval(closed.jaxpr, closed.consts, flat, mantissa_bits, counter)
        return jax.tree.unflatten(jax.tree.structure(shapes), out)

    jitted = jax.jit(run)

    def call(*args):
        out = jitted(*args)
        call.rounded_ops = counter[0]
        return out

    call.rounded_ops = 0
    return call


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))

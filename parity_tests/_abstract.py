"""A jaxkd model with torch weights, without paying for its random initialisation.

Building a large model eagerly compiles every initialiser op for every parameter shape (ResNet-18: ~16 s on a busy
2-core machine, the first time in a process), only for the parity tests to overwrite each weight with torch's.
:func:`loaded` builds the model's structure with ``nnx.eval_shape`` (no computation), fills every variable with a
placeholder of its shape (zeros; a fixed key for RNG streams) and then loads the state dict with
``jaxkd.interop.torch_to_jax`` (strict: every parameter and statistic is overwritten).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.interop import torch_to_jax


def _placeholder(value: Any) -> Any:
    if not isinstance(value, jax.ShapeDtypeStruct):
        return value
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        n = int(np.prod(value.shape))
        keys = jax.random.split(jax.random.key(0), max(n, 1))
        return keys[0] if value.shape == () else keys.reshape(value.shape)
    return jnp.zeros(value.shape, value.dtype)


def shell(ctor: Callable[[], nnx.Module]) -> nnx.Module:
    """``ctor()``'s model with every variable a placeholder of its shape and dtype (see the module docstring)."""
    model = nnx.eval_shape(ctor)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            var.set_value(_placeholder(var.get_value()))
    return model


def loaded(ctor: Callable[[], nnx.Module], state_dict: Mapping[str, Any]) -> nnx.Module:
    """``ctor()``'s model holding ``state_dict`` (torch layout, strict)."""
    return torch_to_jax(shell(ctor), state_dict, strict=True)

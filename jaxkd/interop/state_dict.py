"""Generic PyTorch <-> jaxkd (Flax NNX) state-dict conversion.

Naming contract (shared by every jaxkd model): an NNX variable's path joined by '.' is its torch state-dict
key after these rules:

* path components named ``layers`` are dropped (``nnx.Sequential`` stores ``self.layers``; torch
  ``nn.Sequential`` has no such level); integer components are list indices, as in torch;
* leaf names: nnx.Param ``kernel`` -> ``weight`` (conv HWIO -> OIHW via ``transpose(3, 2, 0, 1)``, in general
  (spatial..., I, O) -> (O, I, spatial...); linear (in, out) -> (out, in)), ``scale`` -> ``weight``, ``bias``
  -> ``bias``; nnx.BatchStat ``mean`` -> ``running_mean``, ``var`` -> ``running_var``,
  ``num_batches_tracked`` unchanged (int64 0-d on the torch side); every other leaf keeps name and shape;
* only nnx.Param and nnx.BatchStat variables are converted (rng state, counters, ... are not).

Values may be torch tensors or numpy arrays. torch is never imported by this module: a tensor can only
exist if the caller already imported torch, so ``sys.modules['torch']`` is used to recognise it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.errors import JaxkdError
from jaxkd.interop.torch_pickle import as_array, unwrap_state_dict

__all__ = [
    "StateDictMismatch",
    "torch_to_jax",
    "jax_to_torch",
    "torch_state_dict_shapes",
    "torch_state_dict_keys",
    "unwrap_state_dict",
    "shape_mismatches",
    "torch_param_keys",
    "param_tree_from_torch",
    "param_tree_to_torch",
    "model_from_torch",
    "placeholder_model",
]

_PARAM_LEAF = {"kernel": "weight", "scale": "weight"}
_STAT_LEAF = {"mean": "running_mean", "var": "running_var"}


class StateDictMismatch(JaxkdError, ValueError):
    """A state dict does not match the model: lists missing, unexpected and mis-shaped keys."""


def _torch_key(path: tuple, var: nnx.Variable) -> str:
    leaves = _PARAM_LEAF if isinstance(var, nnx.Param) else _STAT_LEAF if isinstance(var, nnx.BatchStat) else {}
    return _join_key(path, leaves)


def _join_key(path: tuple, leaves: Mapping[str, str]) -> str:
    parts = [str(p) for p in path if p != "layers"]
    parts[-1] = leaves.get(parts[-1], parts[-1])
    return ".".join(parts)


def _is_kernel(path: tuple, var: nnx.Variable) -> bool:
    return isinstance(var, nnx.Param) and path[-1] == "kernel"


def _jax_to_torch_layout(arr: np.ndarray, is_kernel: bool) -> np.ndarray:
    """Kernel (spatial..., I, O) -> (O, I, spatial...); (in, out) -> (out, in); anything else unchanged."""
    if not is_kernel or arr.ndim < 2:
        return arr
    n = arr.ndim
    return np.transpose(arr, (n - 1, n - 2, *range(n - 2)))


def _torch_to_jax_layout(arr: np.ndarray, is_kernel: bool) -> np.ndarray:
    """Inverse of :func:`_jax_to_torch_layout`: (O, I, spatial...) -> (spatial..., I, O)."""
    if not is_kernel or arr.ndim < 2:
        return arr
    n = arr.ndim
    return np.transpose(arr, (*range(2, n), 1, 0))


def _variables(model: nnx.Module) -> dict[str, tuple[tuple, nnx.Variable]]:
    """torch key -> (nnx path, Variable) for every nnx.Param / nnx.BatchStat of ``model`` (graph order).

    The Variables are the model's own objects, so assigning to them updates the model in place.
    """
    out: dict[str, tuple[tuple, nnx.Variable]] = {}
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, (nnx.Param, nnx.BatchStat)):
            continue
        key = _torch_key(path, var)
        if key in out:
            raise ValueError(
                f"two variables map to the torch key {key!r}: {out[key][0]} and {path}; rename one of them"
            )
        out[key] = (path, var)
    return out


def _to_numpy(value: Any, key: str) -> np.ndarray:
    arr = as_array(value)
    if arr is not None:
        return arr
    if isinstance(value, (jax.Array, int, float)):
        return np.asarray(value)
    raise TypeError(f"state dict value for {key!r} has unsupported type {type(value).__name__}; "
                    "use torch tensors or numpy arrays")


def torch_state_dict_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """torch key -> torch-layout shape for every convertible variable of ``model``."""
    return {
        key: tuple(_jax_to_torch_layout(np.empty(var[...].shape, np.int8), _is_kernel(path, var)).shape)
        for key, (path, var) in _variables(model).items()
    }


def shape_mismatches(expected: Mapping[str, tuple], state_dict: Mapping[str, Any]
                     ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """Does a torch-layout state dict fit the {key: shape} a model expects: (missing keys, unexpected keys,
    mis-shaped (key, expected shape, got shape)), all empty when it fits. Values: anything with a shape."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shaped = [(k, tuple(expected[k]), tuple(np.shape(state_dict[k]))) for k in expected
              if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(expected[k])]
    return missing, unexpected, shaped


def torch_param_keys(model: nnx.Module) -> set[str]:
    """The torch keys of ``model``'s nnx.Param variables: torch's parameters, as opposed to its buffers
    (BatchNorm's running statistics and counter)."""
    return {key for key, (_, var) in _variables(model).items() if isinstance(var, nnx.Param)}


def _param_path_key(path: tuple) -> tuple[str, bool]:
    """(torch key, is a kernel) of a leaf of an nnx.Param state flattened by jax.tree_util (its key path: DictKeys,
    then the Variable's own ``.value``)."""
    names = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path
                  if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value"))
    return _join_key(names, _PARAM_LEAF), names[-1] == "kernel"


def param_tree_from_torch(params_like: Any, tensors: Mapping[str, Any]) -> Any:
    """A pytree shaped like ``params_like`` (a model's nnx.Param state, or an optimiser moment of it such as optax's
    Adam ``mu``) whose leaves are ``tensors`` -- torch-layout arrays keyed by torch parameter key, e.g. torch
    optimiser moments -- in jaxkd's layout (the layout conversion of :func:`torch_to_jax`) and the leaves' dtypes.
    Every leaf's key must be in ``tensors`` with the torch-layout shape (KeyError / ValueError otherwise)."""

    def convert(path, leaf):
        key, kernel = _param_path_key(path)
        arr = _torch_to_jax_layout(_to_numpy(tensors[key], key), kernel)
        if arr.shape != leaf.shape:
            raise ValueError(f"{key}: torch-layout shape {np.shape(tensors[key])} does not give {leaf.shape}")
        return jnp.asarray(np.asarray(arr, dtype=leaf.dtype))

    return jax.tree_util.tree_map_with_path(convert, params_like)


def param_tree_to_torch(params_like: Any) -> dict[str, np.ndarray]:
    """Inverse of :func:`param_tree_from_torch`: a pytree shaped like a model's nnx.Param state (the parameters, or
    an optimiser moment of them) -> {torch parameter key: torch-layout numpy array}, in jaxkd's (sorted) order."""
    out: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params_like)[0]:
        key, kernel = _param_path_key(path)
        out[key] = np.array(_jax_to_torch_layout(np.asarray(jax.device_get(leaf)), kernel), order="C", copy=True)
    return out


def torch_state_dict_keys(model: nnx.Module) -> list[str]:
    """The torch state-dict keys ``model`` converts to/from (sorted)."""
    return sorted(torch_state_dict_shapes(model))


def jax_to_torch(model: nnx.Module) -> dict[str, np.ndarray]:
    """Export ``model`` as a torch-layout state dict of numpy arrays.

    Kernels are transposed to torch layout (conv OIHW, linear (out, in)); ``num_batches_tracked`` becomes an
    int64 0-d array; other values keep their dtype. ``torch.from_numpy`` of each value loads with
    ``load_state_dict(strict=True)`` into the matching torch module. Bit-exact inverse of :func:`torch_to_jax`.
    """
    out: dict[str, np.ndarray] = {}
    for key, (path, var) in _variables(model).items():
        arr = np.asarray(jax.device_get(var[...]))
        if path[-1] == "num_batches_tracked":
            arr = arr.astype(np.int64)
        out[key] = np.array(_jax_to_torch_layout(arr, _is_kernel(path, var)), order="C", copy=True)
    return out


def torch_to_jax(model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> nnx.Module:
    """Load a torch-layout state dict into ``model`` in place and return ``model``.

    ``state_dict``: key -> torch tensor or numpy array, optionally wrapped as ``{'model_state_dict': sd, ...}``.
    Values are cast to the dtype of the model's variable (so a float64 model loads float32 weights exactly)
    and placed with that variable's sharding. Raises :class:`StateDictMismatch` naming every mis-shaped key
    (expected vs got, torch layout) and, when ``strict``, every missing and unexpected key; nothing is written
    unless the whole dict is valid. With ``strict=False`` missing keys keep their value, unexpected keys are
    ignored (shapes are still checked, as torch does).
    """
    sd = unwrap_state_dict(state_dict)
    targets = _variables(model)
    arrays = {key: _to_numpy(sd[key], key) for key in targets if key in sd}
    missing, unexpected, shaped = shape_mismatches(torch_state_dict_shapes(model), {**sd, **arrays})
    mis_shaped = [f"{key}: expected {want}, got {got}" for key, want, got in shaped]
    pending = [(var, _torch_to_jax_layout(arrays[key], _is_kernel(path, var)))
               for key, (path, var) in targets.items() if key in arrays and key not in {k for k, _, _ in shaped}]
    problems = []
    if mis_shaped:
        problems.append("mis-shaped keys: " + "; ".join(mis_shaped))
    if strict and missing:
        problems.append("missing keys: " + ", ".join(missing))
    if strict and unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if problems:
        raise StateDictMismatch(
            f"state dict does not match {type(model).__name__}: " + " | ".join(problems)
            + " (check the model config, e.g. variant/dataset/patch size, or pass strict=False)"
        )
    for var, arr in pending:
        old = var[...]
        new = jnp.asarray(np.asarray(arr, dtype=old.dtype))
        sharding = getattr(old, "sharding", None)
        if sharding is not None:
            new = jax.device_put(new, sharding)
        var[...] = new
    return model


def _placeholder(value: Any) -> Any:
    """A concrete stand-in for an abstract value (jax.ShapeDtypeStruct): zeros, or fixed keys for RNG streams."""
    if not isinstance(value, jax.ShapeDtypeStruct):
        return value
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        keys = jax.random.split(jax.random.key(0), max(int(np.prod(value.shape)), 1))
        return keys[0] if value.shape == () else keys.reshape(value.shape)
    return jnp.zeros(value.shape, value.dtype)


def placeholder_model(ctor: Callable[[], nnx.Module]) -> nnx.Module:
    """``ctor()``'s model built abstract (``nnx.eval_shape``: no computation) with every variable a placeholder of
    its shape and dtype: zeros, and fixed keys for RNG streams. For weights that are loaded next."""
    model = nnx.eval_shape(ctor)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            var.set_value(_placeholder(var.get_value()))
    return model


def model_from_torch(ctor: Callable[[], nnx.Module], state_dict: Mapping[str, Any]) -> nnx.Module:
    """``ctor()``'s model holding ``state_dict`` (:func:`torch_to_jax`, strict), without its random initialisation.

    Eager initialisation compiles every initialiser op for every parameter shape (ResNet-18: ~16 s cold on 2 busy
    CPU cores) only for each value to be overwritten. Here the model is a :func:`placeholder_model` (RNG streams
    get fixed keys, which a frozen model in eval mode never draws from) and the state dict then overwrites every
    parameter and statistic (a missing one is a :class:`StateDictMismatch`, as in :func:`torch_to_jax`).
    """
    return torch_to_jax(placeholder_model(ctor), state_dict, strict=True)

"""A PyTorch checkpoint of a jaxkd model, read and checked before any weight is copied: the state dict of a
``.pth`` / ``.safetensors`` file without running pickled code, the torch-layout shapes a config's model expects,
and a short listing of what does not fit. Shared by ``python -m jaxkd.convert`` and the teacher loaders."""

from __future__ import annotations

import os

import numpy as np

from jaxkd.interop import torch_pickle as tc

__all__ = ["load_torch_checkpoint", "expected_shapes", "expected_layout", "fit_problems", "ORIGINAL_PREFIX",
           "jaxkd_keys"]

_HEADS = ("classifier.3.weight", "head.weight", "fc.weight", "head.fc.weight")
#: model_type -> the prefix of its keys in the original project's checkpoints: its ConvNeXtV2Tiny holds timm's model
#: as ``self.model`` (src/teachers.py@5608f14), so its best_model.pth says ``model.stem.0.weight`` where timm (and
#: jaxkd) say ``stem.0.weight``.
ORIGINAL_PREFIX = {"convnext_v2_tiny": "model."}
_SHOW = 5  # keys listed per kind of mismatch


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The model state dict in a ``.pth`` (the original's best_model.pth, or a bare state dict) or
    ``.safetensors`` file, as {torch key: numpy array}, read without importing or running pickled classes
    (:func:`jaxkd.interop.torch_pickle.load_torch_file`). Raises TorchCheckpointError naming the file and the fix."""
    return tc.state_dict_arrays(tc.load_torch_file(path), str(path))


def jaxkd_keys(model_type: str, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``sd`` in jaxkd's key layout: the original's wrapper prefix of ``model_type`` (:data:`ORIGINAL_PREFIX`)
    removed when every key has it; otherwise unchanged (timm's own layout, or jaxkd's / torch_ref's)."""
    prefix = ORIGINAL_PREFIX.get(model_type)
    if prefix and sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _listing(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def fit_problems(expected: dict[str, tuple], sd: dict[str, np.ndarray]) -> tuple[list[str], str]:
    """(problems, hint) of a torch-layout state dict against the expected {key: shape}; problems empty = fits."""
    from jaxkd.interop.state_dict import shape_mismatches

    missing, unexpected, mismatched = shape_mismatches(expected, sd)
    shaped = [f"{k} {got} vs {want}" for k, want, got in mismatched]
    problems = []
    if shaped:
        problems.append(f"{len(shaped)} mis-shaped (checkpoint vs preset): {_listing(shaped)}")
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    hint = ""
    for head in _HEADS:
        if head in sd and head in expected and sd[head].shape[1:] == expected[head][1:] \
                and sd[head].shape[0] != expected[head][0]:
            hint = f"; try --config.model.num_classes={sd[head].shape[0]}"
    return problems, hint


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """torch key -> torch-layout shape of the model ``cfg`` builds, without initialising it (nnx.eval_shape)."""
    return expected_layout(cfg)[0]


def expected_layout(cfg) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(torch key -> torch-layout shape, the keys that are parameters rather than buffers) of the model ``cfg``
    builds, without initialising it (nnx.eval_shape)."""
    from flax import nnx

    from jaxkd import models
    from jaxkd.interop.state_dict import torch_param_keys, torch_state_dict_shapes

    abstract = nnx.eval_shape(lambda: models.build(cfg, nnx.Rngs(0)))
    for _, var in nnx.iter_graph(abstract):
        if isinstance(var, nnx.Variable) and hasattr(var.get_value(), "shape"):
            var.set_value(np.broadcast_to(np.zeros((), np.int8), var.get_value().shape))  # shape only, no memory
    return torch_state_dict_shapes(abstract), torch_param_keys(abstract)

"""ImageNet weights for a model that starts from them (``model.pretrained_path``): ConvNeXt V2-Tiny from timm's
``convnextv2_tiny`` weight file, as the original project's ``pretrained: true`` did (../shared/spec/LATER.md §2.2),
without any download.

The file: timm's ``convnextv2_tiny`` state dict in timm's key layout, as ``.safetensors`` (the Hugging Face hub's
``timm/convnextv2_tiny.<tag>/model.safetensors``; timm's default tag for the name is ``fcmae_ft_in22k_in1k``) or as
a ``.pth`` state dict (read without running pickled code). What is copied: every weight of the stages and the head's
LayerNorm. What is not, as in the original: its ``ConvNeXtV2Tiny`` replaced timm's whole stem with a new Conv 2×2/s2
(``trunc_normal_(std=0.02)``, bias 0) and a new LayerNorm2d (weight 1, bias 0), and timm drops the 1000-class
classifier for another class count (``head.fc``: ``trunc_normal_(std=0.02)``, bias 0). Those three stay as the
model initialised them -- jaxkd's ConvNeXtV2 initialises them exactly so, from the run's seed. The classifier of a
file with as many classes as the model is re-initialised too (the original asked timm for ``num_classes`` of the
dataset; its head is the dataset's).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flax import nnx

from jaxkd.config import ConfigError
from jaxkd.interop import fit
from jaxkd.interop import torch_pickle as tc
from jaxkd.interop.state_dict import torch_state_dict_shapes, torch_to_jax

__all__ = ["NOT_COPIED", "pretrained_weights", "load_pretrained"]

#: keys of a timm convnextv2_tiny file that are not copied: the replaced stem and the classifier
NOT_COPIED = ("stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias", "head.fc.weight", "head.fc.bias")
_FIELD = "config field 'model.pretrained_path'"
_WHERE = ("timm's convnextv2_tiny weights (e.g. model.safetensors of the Hugging Face hub's "
          "timm/convnextv2_tiny.fcmae_ft_in22k_in1k)")


def _read(path: str | os.PathLike, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{_FIELD} = '{path}': no such file; give {_WHERE} (no download here), or '' to start "
                          "from random weights")
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise ConfigError(f"{_FIELD} = '{path}': give a .safetensors or .pth file of {_WHERE}")
    try:
        sd = fit.jaxkd_keys("convnext_v2_tiny", fit.load_torch_checkpoint(path))
    except tc.TorchCheckpointError as e:
        raise ConfigError(f"{_FIELD}: {e}") from None
    expected = {k: s for k, s in expected.items() if k not in NOT_COPIED}
    problems, _ = fit.fit_problems(expected, {k: v for k, v in sd.items() if k not in NOT_COPIED})
    if problems:
        seen = tc.describe_state_dict(sd)
        raise ConfigError(f"{_FIELD} = '{path}' is not {_WHERE}: "
                          + (f"it holds {seen}; " if seen else "") + "; ".join(problems))
    return {k: sd[k] for k in expected}


def pretrained_weights(cfg) -> dict[str, np.ndarray]:
    """The weights of timm's convnextv2_tiny file ``cfg.model.pretrained_path`` that the model of ``cfg`` takes
    over, as {torch key: array}: every key but :data:`NOT_COPIED`, checked against the shapes of the config's model
    (without building it). Raises ConfigError (one line: the file, what it holds, what to give) for a missing or
    unreadable file or another architecture."""
    return _read(cfg.model.pretrained_path, fit.expected_shapes(cfg))


def load_pretrained(model: nnx.Module, weights: str | os.PathLike | dict) -> str:
    """Copies timm's ImageNet weights into ``model`` (a jaxkd ConvNeXtV2) in place: ``weights`` from
    :func:`pretrained_weights`, or the file's path (checked against ``model``). The stem and the classifier keep the
    model's own initialisation. Returns a one-line note for the run's log."""
    if not isinstance(weights, dict):
        where = weights
        weights = _read(weights, torch_state_dict_shapes(model))
    else:
        where = "model.pretrained_path"
    torch_to_jax(model, weights, strict=False)
    return (f"{where}: {len(weights)} ImageNet tensors copied; the 2x2 stem and the {model.num_classes}-class head "
            "are newly initialised (the original's recipe)")

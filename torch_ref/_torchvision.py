"""Import torchvision for its pure-Python transforms, also where its C++ ops cannot load.

The registry's torchvision wheel that matches torch 2.13.0 (torchvision 0.28.0) is linked against the CUDA build of
torch; with the CPU build its ``_C`` extension does not load, and ``import torchvision`` then stops at
``torch.library.register_fake("torchvision::nms")`` ("operator torchvision::nms does not exist"). torch_ref uses
only ``torchvision.transforms`` on PIL images (Pillow and Python floats, no C++ op), so where that happens the two
operator schemas that torchvision registers fake kernels for are declared here, without any kernel, and the import
is retried. Where the C++ ops load (a CPU torchvision, or CUDA torch) nothing is declared.
"""

from __future__ import annotations

import sys

import torch

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIB = None  # keeps the declared schemas alive


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def load():
    """``torchvision``, imported (see the module docstring)."""
    global _LIB
    try:
        import torchvision
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "torch_ref.augment needs torchvision (its AutoAugment / affine code is the reference): "
            "pip install -e '.[test]' torch==2.13.0 torchvision==0.28.0") from e
    except RuntimeError as e:
        if "torchvision::nms" not in str(e) or _LIB is not None:
            raise
        _forget_partial_import()
        _LIB = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _LIB.define(schema)
        import torchvision
    return torchvision

"""jaxkd: small-image classification with knowledge distillation in JAX/Flax NNX.

Importing jaxkd never imports torch and never touches the network; submodules are imported lazily.
"""

import os as _os

__version__ = "0.1.0"

#: XLA:CPU flags jaxkd adds to XLA_FLAGS on import (they act when JAX starts its CPU backend; GPUs ignore them).
#: Convolutions outside YNNPACK's fusions: measured with python -m jaxkd.bench on 2 cores, fp32, time ratio to
#: torch_ref MNIST CNN 1.37 -> 1.19, CIFAR CNN 1.58 -> 1.27, DeiT-Tiny 1.24 -> 1.01, DeiT KD 1.51 -> 1.44.
#: A flag already in XLA_FLAGS is left as given; JAXKD_XLA_DEFAULTS=0 adds none.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def _add_cpu_xla_flags() -> None:
    if _os.environ.get("JAXKD_XLA_DEFAULTS", "1") == "0":
        return
    flags = _os.environ.get("XLA_FLAGS", "")
    add = [f for f in CPU_XLA_FLAGS if f.split("=", 1)[0] not in flags]
    if add:
        _os.environ["XLA_FLAGS"] = " ".join([flags, *add]).strip()


_add_cpu_xla_flags()

__all__ = ["__version__", "load"]


def load(path):
    """(model, config) of a trained jaxkd run for inference, from its workdir (see jaxkd.train.checkpoint.load)."""
    from jaxkd.train.checkpoint import load as _load

    return _load(path)

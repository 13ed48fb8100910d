"""jaxkd: small-image classification with knowledge distillation in JAX/Flax NNX.

Importing jaxkd never imports torch and never touches the network; submodules are imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path):
    """(model, config) of a trained jaxkd run for inference, from its workdir (see jaxkd.checkpoint.load)."""
    from jaxkd.checkpoint import load as _load

    return _load(path)

"""jaxkd: small-image classification with knowledge distillation in JAX/Flax NNX.

Importing jaxkd never imports torch, never touches the network and never changes the environment (the XLA:CPU
flags of the command-line tools are set by their entry points: jaxkd.config.add_cpu_xla_flags); submodules are
imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path):
    """(model, config) of a trained jaxkd run for inference, from its workdir (see jaxkd.train.checkpoint.load)."""
    from jaxkd.train.checkpoint import load as _load

    return _load(path)

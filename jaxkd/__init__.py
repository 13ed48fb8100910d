"""jaxkd: small-image classification with knowledge distillation in JAX/Flax NNX.

Importing jaxkd never imports torch and never touches the network; submodules are imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Training: the one trainer (`loop`: `python -m jaxkd.train`) and its parts — the jitted steps (`steps`), optimiser
and schedules (`optim`), Orbax checkpoints and the workdir (`checkpoint`), metrics, reports and plots
(`reporting`), evaluation over a split (`evaluators`).

Importing this package imports none of them: `from jaxkd.train import steps` loads only what it names, so the
lower layers (steps, optim, checkpoint, reporting) can be used by the tasks without loading the loop.
"""

from __future__ import annotations

__all__ = ["train", "main"]


def train(cfg, workdir, *, force: bool = False) -> dict:
    """Trains per `cfg` into `workdir` (see :func:`jaxkd.train.loop.train`)."""
    from jaxkd.train.loop import train as _train

    return _train(cfg, workdir, force=force)


def main(argv=None) -> int:
    """The command line `python -m jaxkd.train` (see :func:`jaxkd.train.loop.main`)."""
    from jaxkd.train.loop import main as _main

    return _main(argv)

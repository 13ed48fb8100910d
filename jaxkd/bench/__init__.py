"""Benchmarks (not timed tests): ``python -m jaxkd.bench [NAME] [options]``.

Every module ``jaxkd/bench/NAME.py`` that defines ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> dict`` is a subcommand; ``--json FILE`` writes the returned figures. ``models`` (the default): training
step images/s of jaxkd vs torch_ref side by side, and their time ratio. ``data``: input pipeline throughput and its
share of a DeiT-Tiny training step. ``profile``: a training step's time by XLA operation kind. ``report``: BENCH.md
from the others' ``--json`` files (figures live there, not in docstrings).
"""

"""Studies: a suite of jaxkd.train runs (teachers, baselines, distilled students) over seeds, with one results table.

    python -m jaxkd.study quickstart --workdir studies/quickstart --seeds 5     # the embedded digits, no data
    python -m jaxkd.study mnist --workdir studies/mnist                        # 3 seeds, 2 CPU cores
    python -m jaxkd.study cifar --workdir studies/cifar                        # one GPU
    python -m jaxkd.study SUITE --workdir DIR --smoke --seeds 2                # seconds, CI
    python -m jaxkd.study --list                                               # the suites and their runs

Suites are defined in jaxkd/study/suites.py; planning in plan.py, running in runner.py, results in report.py.
"""

from jaxkd.study.stats import paired_delta
from jaxkd.study.suites import SUITES, Run, StudyError, Suite, get_suite

__all__ = ["Run", "Suite", "SUITES", "StudyError", "get_suite", "paired_delta", "run_study", "main"]


def run_study(*args, **kwargs):
    from jaxkd.study.runner import run_study as _run

    return _run(*args, **kwargs)


def main(argv=None):
    from jaxkd.study.runner import main as _main

    return _main(argv)

"""`python tests/_fault_harness.py ARGS...`: jaxkd.train with faults of a real cluster injected, chosen by environment
variables (the tests' harness, not part of jaxkd):

- FAULT_SLOW_BEST=P: process P writes checkpoints_best/ 2 s more slowly (a slow disk: another process's periodic
  save of the same step then overlaps its best save);
- FAULT_OSERROR=STEP:P:ERRNO: Orbax's save of STEP on process P (-1: every process) fails with that OS error
  (28 ENOSPC, 30 EROFS), after the earlier saves have completed (as Orbax's own save waits for them first);
  with FAULT_MARK=FILE it writes the time of the failure there;
- FAULT_SLEEP_S=S: every training step takes S seconds longer (the trainer's on_step hook), so that a test can
  signal or kill a run mid-epoch.
Without them it is `python -m jaxkd.train`.
"""

import os
import sys
import time

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpointers import async_checkpointer

from jaxkd import config
from jaxkd.train import loop as train

SLOW = int(os.environ.get("FAULT_SLOW_BEST", "-2"))
SLEEP_S = float(os.environ.get("FAULT_SLEEP_S", "0") or 0)
BAD_STEP, BAD_PROCESS, BAD_ERRNO = map(int, os.environ.get("FAULT_OSERROR", "-1:-2:0").split(":"))

_commit = async_checkpointer._background_wait_for_commit_futures
_save = ocp.CheckpointManager.save


def slow_commit(directory, *args, **kwargs):
    if SLOW == jax.process_index() and "checkpoints_best" in str(directory):
        time.sleep(2.0)
    return _commit(directory, *args, **kwargs)


def failing_save(self, step, *args, **kwargs):
    if step == BAD_STEP and BAD_PROCESS in (-1, jax.process_index()):
        self.wait_until_finished()
        if os.environ.get("FAULT_MARK"):  # when the fault struck, for the test to time the stop from
            with open(os.environ["FAULT_MARK"], "w") as f:
                f.write(repr(time.time()))
        raise OSError(BAD_ERRNO, os.strerror(BAD_ERRNO))
    return _save(self, step, *args, **kwargs)


async_checkpointer._background_wait_for_commit_futures = slow_commit
ocp.CheckpointManager.save = failing_save
config.main_guard(lambda: train.main(sys.argv[1:], on_step=(lambda step: time.sleep(SLEEP_S)) if SLEEP_S else None))

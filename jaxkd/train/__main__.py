"""`python -m jaxkd.train --config configs/<preset>.py[:arg] --workdir DIR [--config.x.y=value ...]`: the config
and --workdir are checked before JAX is imported (a typo is reported in a fraction of a second)."""

import sys

from jaxkd import config as config_lib

config_lib.precheck(sys.argv[1:], workdir_flag="--workdir")

from jaxkd.train import loop  # noqa: E402  (after the precheck: imports JAX)

config_lib.main_guard(lambda: loop.main(sys.argv[1:]))

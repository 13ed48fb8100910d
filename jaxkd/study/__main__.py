"""`python -m jaxkd.study SUITE --workdir DIR [--seeds N] [--smoke] [--only RUN,...] [--set KEY=VALUE ...]`"""

import sys

from jaxkd import config as config_lib
from jaxkd.study.runner import main

if __name__ == "__main__":
    config_lib.main_guard(lambda: main(sys.argv[1:]))

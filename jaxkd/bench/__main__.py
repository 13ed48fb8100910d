"""``python -m jaxkd.bench [NAME] [--json FILE] [options]``: run one benchmark and print (and save) its figures.

Subcommands are the modules of this package that define ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> dict``, so a new benchmark is one new file (``models``: training-step throughput jaxkd vs
torch_ref, the default when no NAME is given; ``data``: the input pipeline). ``--config.a.b=value``
items are handed to the benchmark as ``args.overrides`` (a list of strings) for ``jaxkd.config.load``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence

from jaxkd.errors import JaxkdError

DEFAULT = "models"


def benchmarks() -> dict:
    """name -> module for every benchmark module of jaxkd.bench."""
    import jaxkd.bench as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"jaxkd.bench.{info.name}")
        if all(hasattr(module, a) for a in ("DESCRIPTION", "add_arguments", "run")):
            found[info.name] = module
    return found


def main(argv: Sequence[str] | None = None) -> int:
    mods = benchmarks()
    from jaxkd.config import ArgumentParser  # (usage errors: one `error:` line, exit 2)
    parser = ArgumentParser(prog="python -m jaxkd.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="name", required=True)
    for name, module in sorted(mods.items()):
        cli = name.replace("_", "-")  # gpu_report.py -> `gpu-report` (the module name also works)
        p = sub.add_parser(cli, aliases=[name] if cli != name else [], help=module.DESCRIPTION,
                           description=module.DESCRIPTION)
        p.set_defaults(bench_module=module)
        p.add_argument("--json", metavar="FILE", default="", help="also write the figures as JSON to FILE")
        module.add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT)  # `python -m jaxkd.bench --quick` = `python -m jaxkd.bench models --quick`
    # '--config.a.b=value' overrides (for benchmarks that take --config) are collected, not parsed by argparse.
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = overrides
    args.argv = argv  # the full command line after the program name (benchmarks that re-run themselves)
    try:
        result = args.bench_module.run(args)
    except JaxkdError as e:  # ConfigError, DataError and other bad input: one line
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from jaxkd.config import add_cpu_xla_flags

    add_cpu_xla_flags()  # as every jaxkd command does (jaxkd.config.main_guard): the trainer's XLA:CPU settings
    sys.exit(main())

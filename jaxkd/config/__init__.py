"""The config system: typed sections with the original project's field names, presets as Python, overrides.

A preset is a Python file in ``configs/`` with ``get_config(arg=None) -> ConfigDict`` that starts from
:func:`base_config` (every field, with its default) and changes what it needs; ``arg`` picks a variant
(``configs/deit_cifar.py:smoke``). :func:`load` imports a preset, applies ``--config.a.b=value`` overrides with
type checks, validates the whole config before any work starts, and returns it locked.

Sections follow SPEC.md §7 (top level, data, model, training, logging, vit, distillation, ss_distillation) and
keep the original project's names and defaults, except where a comment says jaxkd differs; jaxkd's own fields are
marked "jaxkd:". Bad input raises :class:`ConfigError` with one line naming the field and the allowed values.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

__all__ = [
    "ConfigError", "base_config", "load", "validate", "apply_overrides", "add_config_args", "parse_config_args",
    "split_overrides", "CPU_XLA_FLAGS", "add_cpu_xla_flags", "main_guard",
    "to_dict", "to_json", "flatten", "image_shape", "precision", "VIT_VARIANTS", "DATASET_SHAPES", "LOG_LEVELS",
    "MODEL_TYPES", "apply_peer_augmentation", "shared_data",
]

from jaxkd.config.schema import (  # noqa: F401  (re-exported)
    DATASET_SHAPES,
    LOG_LEVELS,
    MODEL_TYPES,
    RULES,
    VIT_VARIANTS,
    ConfigError,
    _cross_checks,
    apply_peer_augmentation,
    base_config,
    image_shape,
    precision,
    shared_data,
)
from jaxkd.errors import JaxkdError

# ----------------------------------------------------------------------------------------------------------------
# Flattening and types

def flatten(cfg: ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': leaf} for every leaf of a (nested) config."""
    out: dict[str, Any] = {}
    items = cfg.items() if isinstance(cfg, (dict, ConfigDict)) else []
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, ConfigDict)):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def to_dict(cfg: ConfigDict) -> dict:
    return cfg.to_dict() if isinstance(cfg, ConfigDict) else dict(cfg)


def to_json(cfg: ConfigDict, indent: int = 2) -> str:
    return json.dumps(to_dict(cfg), indent=indent, sort_keys=True)


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, list):
        inner = {_type_name(x) for x in v} or {"float"}
        return f"list[{'|'.join(sorted(inner))}]"
    return type(v).__name__


def _coerce(path: str, value: Any, default: Any) -> Any:
    """Checks `value` against the type of `default`; ints are accepted for floats (and converted)."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, (list, tuple)):
            elem = default[0] if default else 0.0  # an empty default list holds floats
            return [_coerce(f"{path}[{i}]", x, elem) for i, x in enumerate(value)]
    raise ConfigError(
        f"config field '{path}' = {value!r} has type {_type_name(value)}; expected {_type_name(default)}")


def _parse_literal(path: str, text: str, default: Any) -> Any:
    """Parses an override's text by the field's type ('true'/'false' for bools, lists as [1, 2] or 1,2)."""
    t = text.strip()
    if isinstance(default, bool):
        low = t.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"config field '{path}' = {text!r}: expected a bool (true / false)")
    if isinstance(default, str):
        if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
            return t[1:-1]
        return text
    if isinstance(default, list) and not t.startswith("["):
        t = f"[{t}]"
    try:
        value = ast.literal_eval(t)
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"config field '{path}' = {text!r}: not a valid {_type_name(default)} literal") from None
    return _coerce(path, value, default)


def validate(cfg: ConfigDict) -> ConfigDict:
    """Checks names, types and values of every field against :func:`base_config` and the rules above.

    Raises ConfigError on the first problem, with a message naming the field and the allowed values.
    """
    base = flatten(base_config())
    got = flatten(cfg)
    for key in got:
        if key not in base:
            hint = difflib.get_close_matches(key, base.keys(), n=1)
            raise ConfigError(f"unknown config field '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    for key in base:
        if key not in got:
            raise ConfigError(f"config field '{key}' is missing (start presets from jaxkd.config.base_config())")
    for key, value in got.items():
        coerced = _coerce(key, value, base[key])
        rule = RULES.get(key)
        if rule is not None:
            problem = rule(coerced, cfg)
            if problem:
                raise ConfigError(f"config field '{key}' = {value!r} {problem}")
    for problem in _cross_checks(cfg):
        raise ConfigError(problem)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Loading presets and overrides

def _split_override(item: str) -> tuple[str, str]:
    text = item[2:] if item.startswith("--") else item
    if text.startswith("config."):
        text = text[len("config."):]
    if "=" not in text:
        raise ConfigError(f"override '{item}' needs the form --config.section.field=value")
    key, value = text.split("=", 1)
    return key.strip(), value


def apply_overrides(cfg: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
    """Applies '--config.a.b=value' (or 'a.b=value') overrides, parsed by the field's type."""
    base = flatten(base_config())
    for item in overrides:
        key, text = _split_override(item)
        if key not in base:
            hint = difflib.get_close_matches(key, base.keys(), n=1)
            raise ConfigError(f"unknown config field '{key}' in override '{item}'"
                              + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        value = _parse_literal(key, text, base[key])
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        with node.unlocked():
            node[leaf] = value
        if key == "vit.variant" and value in VIT_VARIANTS:
            # Choosing a variant on the command line brings its width and heads along.
            with cfg.vit.unlocked():
                cfg.vit.embed_dim, cfg.vit.num_heads = VIT_VARIANTS[value]
    return cfg


def _import_preset(path: Path):
    name = f"jaxkd_preset_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file '{path}' cannot be imported: give a .py preset, e.g. configs/deit_cifar.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # presets may build on their siblings (deit_cifar on vit_cifar)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside a user's file
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (a config file is user code: SyntaxError, NameError, ImportError, ...)
        raise ConfigError(_config_file_failure(path, "on import", e)) from None
    finally:
        sys.path.pop(0)
        sys.dont_write_bytecode = dont_write
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file '{path}' has no get_config(arg=None) function")
    return module


def _config_file_failure(path: Path, doing: str, e: BaseException) -> str:
    """One line for an exception raised by a config file's own code: the file and line where it was raised (the
    innermost frame in a config file: a preset may build on a sibling), and the exception."""
    import traceback

    where = None
    if isinstance(e, SyntaxError) and e.filename:
        where = (e.filename, e.lineno)
    else:
        presets = path.resolve().parent
        for frame in traceback.extract_tb(e.__traceback__):
            if Path(frame.filename).resolve().parent == presets:
                where = (frame.filename, frame.lineno)
    at = f" ({where[0]}, line {where[1]})" if where else ""
    text = " ".join((e.msg if isinstance(e, SyntaxError) else str(e)).split())[:200]
    return (f"config file '{path}' failed {doing}{at}: {type(e).__name__}: {text}; fix the file or pick "
            "another preset")


def load(spec: str, overrides: Sequence[str] = ()) -> ConfigDict:
    """Loads 'configs/NAME.py[:arg]', applies overrides, validates, and returns the locked config.

    A bare preset name ('deit_cifar:smoke') is one of jaxkd's own presets (``jaxkd/configs/``, which the wheel
    installs too; a checkout's ``configs/`` is a link to it).
    """
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.suffix:
        path = Path(__file__).resolve().parents[1] / "configs" / f"{path_text}.py"
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found: give a preset such as configs/deit_cifar.py[:smoke]")
    module = _import_preset(path)
    try:
        cfg = module.get_config(arg or None)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (user code, as above)
        raise ConfigError(_config_file_failure(path, f"in get_config({arg or None!r})", e)) from None
    if not isinstance(cfg, ConfigDict):
        raise ConfigError(f"config file '{path}': get_config must return an ml_collections.ConfigDict")
    cfg = ConfigDict(cfg.to_dict())  # a fresh copy, detached from the preset's references
    apply_overrides(cfg, overrides)
    validate(cfg)
    # Normalise int-for-float values so the resolved config has the schema's types.
    base = flatten(base_config())
    for key, value in flatten(cfg).items():
        coerced = _coerce(key, value, base[key])
        if coerced is not value:
            *parents, leaf = key.split(".")
            node = cfg
            for p in parents:
                node = node[p]
            node[leaf] = coerced
    cfg.lock()
    return cfg


class ArgumentParser(argparse.ArgumentParser):
    """argparse with jaxkd's rule for bad input: a usage error (a missing or unknown flag, a bad choice) is one line
    `error: PROG: MESSAGE (see PROG --help)` and exit code 2, not argparse's usage block. Sub-commands inherit it."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds --config PRESET[:arg]; '--config.a.b=value' overrides are collected by parse_config_args."""
    parser.add_argument("--config", required=True, help="preset file, e.g. configs/deit_cifar.py:smoke")
    return parser


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """('--config.a.b=value' items, the rest of argv); '--config.a.b value' is joined into '--config.a.b=value'."""
    argv = list(argv)
    overrides, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            if "=" not in a and i + 1 < len(argv):
                a = f"{a}={argv[i + 1]}"
                i += 1
            overrides.append(a)
        else:
            rest.append(a)
        i += 1
    return overrides, rest


def parse_config_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None):
    """Parses argv; returns (args, config). Overrides are the '--config.x.y=value' items (or '--config.x.y value')."""
    overrides, rest = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    return args, load(args.config, overrides)


def precheck(argv: Sequence[str], *, workdir_flag: str | None = None) -> None:
    """A CLI's cheap checks — its `--config` with overrides, and the folder it writes — run before the CLI imports
    JAX, Flax and Orbax (about 4 s on 2 CPU cores), so that a typo is reported at once. A jaxkd ValueError is
    printed as the usual one `error:` line with exit code 2; anything else (a missing flag, help) is left to the
    CLI's own parser and run to meet again."""
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        return

    def value(flag: str) -> str | None:
        for i, a in enumerate(argv):
            if a == flag and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    def checks():
        spec = value("--config")
        if spec is not None:
            load(spec, split_overrides(argv)[0])
        if workdir_flag is not None and value(workdir_flag) is not None:
            from jaxkd import paths

            paths.output_dir(value(workdir_flag), workdir_flag)

    try:
        checks()
    except JaxkdError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception:  # noqa: BLE001  (reported by the run itself, with the full machinery)
        pass


#: XLA:CPU flags the command-line entry points (:func:`main_guard`, ``python -m jaxkd.bench``) add to XLA_FLAGS
#: before JAX starts its backend; GPUs ignore them. Convolutions outside YNNPACK's fusions (the gain is measured
#: with ``python -m jaxkd.bench``; figures in BENCH.md).
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def add_cpu_xla_flags() -> None:
    """Adds :data:`CPU_XLA_FLAGS` to ``XLA_FLAGS`` for this process and its children. A flag already in XLA_FLAGS
    is left as given; ``JAXKD_XLA_DEFAULTS=0`` adds none. XLA reads XLA_FLAGS when JAX starts its backend (the
    first computation or device query), not when jax is imported, so a command's entry point may call this after
    its imports."""
    import os

    if os.environ.get("JAXKD_XLA_DEFAULTS", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    add = [f for f in CPU_XLA_FLAGS if f.split("=", 1)[0] not in flags]
    if add:
        os.environ["XLA_FLAGS"] = " ".join([flags, *add]).strip()


def main_guard(fn: Callable[[], int | None]) -> None:
    """Runs a CLI main. A :class:`jaxkd.errors.JaxkdError` — bad input (config, path, data, checkpoint), a run
    stopped by its numerics guard, or a run that failed on its own (a checkpoint that cannot be written) — becomes
    one ``error:`` line on stderr and the error's exit code (2, or 1 for a RunFailure). Anything else is a bug and
    keeps its traceback. The XLA:CPU flags (:func:`add_cpu_xla_flags`) and the persistent compilation cache
    (jaxkd.cache) are set up first.

    In a multi-process run a process that fails leaves at once (``os._exit``): the orderly exit would wait up to
    five minutes in jax.distributed's shutdown barrier for peers that are blocked in a collective with it. The
    peers then fail within seconds (their collective loses its partner) or, at worst, when the coordination
    service misses the dead process's heartbeat."""
    from jaxkd.cache import enable_compilation_cache

    add_cpu_xla_flags()
    enable_compilation_cache()
    code, message = 0, None
    try:
        code = fn() or 0
    except JaxkdError as e:
        code, message = e.exit_code, str(e)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            _leave_if_distributed(1, None, e)
        raise
    if message is not None:
        _leave_if_distributed(code, message, None)
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _leave_if_distributed(code: int, message: str | None, exc: BaseException | None) -> None:
    """In a multi-process run: the message (or the traceback) on stderr, then ``os._exit(code)``."""
    import os

    if "jax" not in sys.modules:
        return
    import jax

    initialized = getattr(jax.distributed, "is_initialized", lambda: False)
    if not initialized() or jax.process_count() < 2:
        return
    where = f"process {jax.process_index()} of {jax.process_count()}"
    if message is not None:
        print(f"error: {where}: {message}", file=sys.stderr)
    else:
        import traceback

        traceback.print_exception(exc)
        print(f"error: {where} failed ({type(exc).__name__}); the other processes stop too", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""`python -m jaxkd.summary --config PRESET[:arg] [--config.x.y=value ...]`: the model a config builds, layer by layer.

Prints one row per parameter tensor (name in the torch state-dict spelling, shape, count) and ends with
`total params: N`. The model is built abstractly (jax.eval_shape), so even large models print instantly.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command line: the config is checked before JAX is imported
    from jaxkd import config as _config

    _config.precheck(sys.argv[1:])

from flax import nnx

from jaxkd import config as config_lib


def summary_rows(model: nnx.Module) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, kind, shape, size) for every Param and BatchStat leaf, in a fixed order."""
    rows = []
    for kind, var_type in (("param", nnx.Param), ("stat", nnx.BatchStat)):
        flat = nnx.to_flat_state(nnx.state(model, var_type))
        for path, var in flat:
            value = var.get_value() if hasattr(var, "get_value") else var.value
            name = ".".join(str(p) for p in path if p != "layers")
            rows.append((name, kind, tuple(value.shape), int(value.size)))
    return rows


def format_summary(cfg, model: nnx.Module) -> str:
    rows = summary_rows(model)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{cfg.experiment_name}: {cfg.model.model_type}", f"{'layer':<{width}}{'shape':<22}{'params':>12}",
             "-" * (width + 34)]
    total = 0
    for name, kind, shape, size in rows:
        if kind == "param":
            total += size
            lines.append(f"{name:<{width}}{str(shape):<22}{size:>12,}")
    stats = sum(size for _, kind, _, size in rows if kind == "stat")
    lines.append("-" * (width + 34))
    lines.append(f"non-trainable statistics (BatchNorm): {stats:,}")
    lines.append(f"total params: {total:,}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = config_lib.ArgumentParser(prog="python -m jaxkd.summary", description=__doc__.splitlines()[0])
    config_lib.add_config_args(parser)
    _, cfg = config_lib.parse_config_args(parser, argv)
    from jaxkd import models

    model = nnx.eval_shape(lambda: models.build(cfg, nnx.Rngs(0)))
    print(format_summary(cfg, model))
    return 0


if __name__ == "__main__":
    config_lib.main_guard(lambda: main(sys.argv[1:]))

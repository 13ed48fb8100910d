"""The text of a jaxkd preset file imported from the original project's YAML (:mod:`jaxkd.interop.yaml_import`):
``get_config`` sets the fields that differ from base_config(), each under the comments that explain it, and lists
what was not imported (PyTorch machinery; with --ignore-unsupported, unknown keys and values jaxkd cannot
reproduce)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxkd import config as config_lib
from jaxkd.interop.yaml_fields import SECTIONS, TOP_LEVEL

__all__ = ["render_preset"]


def _literal(value: Any) -> str:
    return repr(value)


def render_preset(cfg: ConfigDict, conv: Any, source: str, command: str) -> str:
    """The text of a preset file that rebuilds ``cfg`` from base_config(), setting only the differing fields.

    ``conv``: the yaml_import converter that made ``cfg`` (its notes, forced fields, header, and what it skipped).
    """
    base = config_lib.flatten(config_lib.base_config())
    flat = config_lib.flatten(cfg)
    order = TOP_LEVEL + SECTIONS
    body: list[str] = []
    for path in sorted(base, key=lambda p: (order.index(p.split(".")[0]), p.count(".") > 1, p)):
        value, default = flat[path], base[path]
        if value == default and type(value) is type(default) and path not in conv.forced:
            continue
        for note in conv.notes.get(path, []):
            body += ["    # " + line for line in textwrap.wrap(note, 110)]
        body.append(f"    c.{path} = {_literal(value)}")
    if conv.torch_only:
        body.append("    # Not imported: the original's PyTorch machinery (what jaxkd does instead)")
        for key, value, why in conv.torch_only:
            body += ["    #   " + line for line in textwrap.wrap(f"{key}: {value!r} -- {why}", 106)]
    skipped = conv.unsupported + [(k, v, "unknown field" + hint) for k, v, hint in conv.unknown]
    if skipped:
        body.append("    # Not imported (--ignore-unsupported)")
        for key, value, why in skipped:
            body += ["    #   " + line for line in textwrap.wrap(f"{key}: {value!r} -- {why}", 106)]
    notes = list(conv.header)
    if skipped:
        notes.append("Not imported (--ignore-unsupported): " + ", ".join(k for k, _, _ in skipped) + ".")
    doc_lines = [
        f"jaxkd preset imported from the original project's YAML config {Path(source).name}.",
        "",
        f"Source: {source}",
        *textwrap.wrap(f"Written by: {command}", 112, subsequent_indent="    "),
        "Only the fields that differ from jaxkd.config.base_config() are set (and data.batch_size, which means the",
        "global batch here).",
    ]
    if notes:
        doc_lines += ["", "Notes:"]
        for n in notes:
            doc_lines += textwrap.wrap(n, 112, initial_indent="- ", subsequent_indent="  ")
    doc = "\n".join(doc_lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return (f'"""{doc}\n"""\n\nfrom jaxkd.config import base_config\n\n\ndef get_config(arg=None):\n'
            f"    c = base_config()\n" + "\n".join(body) + "\n"
            "    if arg:\n        raise ValueError(f\"unknown variant {arg!r} (this imported preset has none)\")\n"
            "    return c\n")

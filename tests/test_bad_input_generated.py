"""Bad input drawn, not listed (issue 18 §6): hypothesis draws `--config.*` overrides of every config field — wrong
types, out-of-range values, non-finite numbers, unknown keys and typos — and output paths of every kind, and holds
each outcome to the rule of tests/test_bad_input.py: the command goes ahead, or it stops with exactly one line
`error: ...`, exit code 2, no traceback, and the files already on disk unchanged.

Layers, cheapest first: (1) every drawn override list through `jaxkd.config.load` in-process (hundreds of
examples: the config is where most bad input lands); (2) a seeded sample of the drawn configs that load, through the
real `jaxkd.train` CLI entry (`main_guard`) in-process on the smoke quickstart, one optimiser step each; (3) drawn
output paths for the CLIs that write (train, evaluate, predict, convert).
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from jaxkd import config as config_lib

PRESET = "configs/quickstart.py:smoke"
FIELDS = {k: v for k, v in config_lib.flatten(config_lib.base_config()).items()}
NAMES = sorted(FIELDS)


def _wrong_values(default) -> st.SearchStrategy[str]:
    """Text a user might type for a field whose default is `default`: wrong types, out of range, non-finite."""
    common = st.sampled_from(["", "abc", "None", "[1,", "{'a': 1}", "[]", "nan", "inf", "-inf", "1e309", "-1",
                              "0", "1e9", "-1e9", "true", "0.5", "1.5", "[0.1, 0.2]", "'x'", "((", "1_000"])
    if isinstance(default, bool):
        extra = st.sampled_from(["maybe", "2", "yes", "false"])
    elif isinstance(default, int):
        extra = st.integers(-10**12, 10**12).map(str)
    elif isinstance(default, float):
        extra = st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr)
    elif isinstance(default, (list, tuple)):
        extra = st.lists(st.one_of(st.integers(-5, 300), st.floats(-2, 2)), max_size=4).map(repr)
    else:
        extra = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_:/.0123456789", max_size=12)
    return st.one_of(common, extra)


@st.composite
def overrides(draw) -> list[str]:
    """1-3 overrides: a real field with a drawn value, or an unknown / misspelt key."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "field", "typo", "unknown"]))
        name = draw(st.sampled_from(NAMES))
        if kind == "typo":
            i = draw(st.integers(0, len(name) - 1))
            name = name[:i] + name[i + 1:]
        elif kind == "unknown":
            name = draw(st.sampled_from(["optimizer.lr", "training.frobnicate", "model", "x.y.z", "data.source.kind"]))
        value = draw(_wrong_values(FIELDS.get(name)))
        out.append(f"--config.{name}={value}")
    return out


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, repr(message)


# ----------------------------------------------------------------------------------------------------------------
# (1) the config layer, in-process


@seed(18)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides())
def test_drawn_overrides_load_or_fail_with_one_line(drawn):
    try:
        cfg = config_lib.load(PRESET, drawn)
    except ValueError as e:  # ConfigError and jaxkd's own ValueErrors: what main_guard turns into exit 2
        assert isinstance(e, config_lib.ConfigError) or type(e).__module__.startswith("jaxkd"), (drawn, repr(e))
        _one_line(str(e))
        return
    for key, value in config_lib.flatten(cfg).items():  # what loads is what the schema allows: no NaN slips in
        if isinstance(value, float):
            assert not math.isnan(value), (drawn, key, value)


# ----------------------------------------------------------------------------------------------------------------
# (2) a seeded sample of drawn configs that load, through the train CLI's own entry


def _cli(module, argv: list[str], capsys) -> tuple[int, list[str]]:
    """(exit code, non-empty stderr lines) of `python -m jaxkd.<module> argv`, run in-process."""
    import importlib

    main = importlib.import_module(f"jaxkd.{module}").main
    with pytest.raises(SystemExit) as exit_:
        config_lib.main_guard(lambda: main(argv))
    err = capsys.readouterr().err
    return exit_.value.code, [x for x in err.splitlines() if x.strip() and not x.startswith(("note:", "first step"))]


def _tree(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


TINY = ["--config.training.num_epochs=1", "--config.training.max_steps_per_epoch=1",
        "--config.training.warmup_epochs=0", "--config.logging.progress_bar=false", "--config.training.use_swa=false"]


def _loading_sample(n: int) -> list[list[str]]:
    """The first n drawn overrides (seeded) of the fields a supervised run reads that load on top of TINY."""
    import random

    rng, out = random.Random(18), []
    live = [k for k in NAMES if k.split(".")[0] in ("training", "data", "model")]
    while len(out) < n:
        name = rng.choice(live)
        value = rng.choice(["0", "1", "2", "0.5", "true", "false", "1e-9", "100", "'cls'", "[0.5]"])
        drawn = [f"--config.{name}={value}"]
        try:
            config_lib.load(PRESET, TINY + drawn)
        except ValueError:
            continue
        out.append(drawn)
    return out


@pytest.mark.parametrize("drawn", _loading_sample(3), ids=lambda d: d[0].split("--config.")[1][:40])
def test_drawn_configs_that_load_run_or_stop_with_one_line(drawn, tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "mine.txt").write_text("the user's own file\n")
    before = _tree(tmp_path)
    code, lines = _cli("train", ["--config", PRESET, "--workdir", str(work), *TINY, *drawn], capsys)
    assert code in (0, 2), (code, lines)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(_tree(tmp_path).get(k) == v for k, v in before.items()), "a file that was there changed"


# ----------------------------------------------------------------------------------------------------------------
# (3) drawn output paths


@st.composite
def out_paths(draw, root: Path) -> tuple[str, str]:
    """(kind, path): empty, a file where a folder goes, a folder where a file goes, deep and new, odd names."""
    kind = draw(st.sampled_from(["empty", "blank", "file", "dir", "deep", "odd"]))
    name = draw(st.text(alphabet="abcXYZ _-.éü0123456789", min_size=1, max_size=10).filter(
        lambda s: s.strip(" .") and "/" not in s))
    path = {"empty": "", "blank": "  ", "file": str(root / "a_file"), "dir": str(root / "a_dir"),
            "deep": str(root / "new" / name / "deeper"), "odd": str(root / name)}[kind]
    return kind, path


def test_drawn_output_paths(tmp_path_factory, capsys):
    root = tmp_path_factory.mktemp("paths")
    (root / "a_file").write_text("keep me\n")
    (root / "a_dir").mkdir()
    (root / "a_dir" / "keep.txt").write_text("keep me too\n")
    before = _tree(root)
    seen = []

    @seed(18)
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(out_paths(root), st.sampled_from(["from-yaml", "to-torch", "explain"]))
    def check(kind_path, command):
        kind, path = kind_path
        if command == "explain":  # predict --explain: a folder is expected
            argv = ["--workdir", str(root / "no_run"), str(root / "x.png"), "--explain", path]
            code, lines = _cli("predict", argv, capsys)
        else:
            argv = ([command, str(root / "no.yaml")] if command == "from-yaml" else
                    [command, "--workdir", str(root / "no_run")]) + ["--out", path]
            code, lines = _cli("convert", argv, capsys)
        seen.append((kind, command, code))
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (kind, path, command, lines)
        if kind in ("empty", "blank"):
            assert "is empty" in lines[0], lines
        if (kind, command) in (("file", "explain"), ("dir", "from-yaml"), ("dir", "to-torch")):
            assert ("is a file" if kind == "file" else "is a folder") in lines[0], lines

    check()
    assert _tree(root) == before
    assert {k for k, _, _ in seen} >= {"empty", "file", "dir", "deep"}, seen
    print(f"{len(seen)} drawn paths; exit codes {sorted({c for *_, c in seen})}", file=sys.stderr)

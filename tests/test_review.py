"""python -m parity_tests.review: the mapping covers the review plan, and the tool's statuses and exit codes.

The mapping checks read the real review plan (../shared/spec/review_plan.md; missing: fail in CI, skip elsewhere).
The tool itself runs on a tiny fake: a plan of four items and a test file with a passing and a failing test.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parity_tests import review
from parity_tests.review_items import Item, all_items, item

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan():
    path = review.default_plan()
    if not path.is_file():
        msg = f"review plan not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    items, titles = review.parse_plan(path.read_text())
    return items, titles


def test_plan_parses_stages_1_to_9(plan):
    items, titles = plan
    assert sorted(titles) == list(range(1, 10))
    by_stage = {s: [p for p in items if p.stage == s] for s in titles}
    assert all(by_stage[s] for s in titles)
    assert [p.text for p in by_stage[8]][:2] == ["main.py", "src/config.py"] and by_stage[8][0].cells[1] == "1094"
    assert {p.section for p in by_stage[9]} == {"9.1", "9.2", "9.3", "9.4"}
    assert not any(p.text.startswith(("Phase", "Status", "Verification Item")) for p in items)


def test_every_plan_item_has_exactly_one_entry_and_every_entry_an_item(plan):
    items, _ = plan
    found, orphans, ambiguous = review.match_entries(items, all_items())
    assert [f"{p.section} {p.text}" for p, e in zip(items, found) if e is None] == []
    assert [f"{e.section} {e.match}" for e in orphans] == []
    assert ambiguous == []
    assert all(e.tests and e.jaxkd and e.torch and e.check for e in all_items())
    assert all(e.severity in ("Critical", "High", "Medium", "Low") for e in all_items())


def test_every_mapped_test_exists_and_every_location_resolves():
    ids = sorted({t for e in all_items() for t in e.tests})
    collected = review.collect([t.split("::")[0] for t in ids], ROOT)
    assert [t for t in ids if not any(review.selects(t, c) for c in collected)] == []
    for e in all_items():
        for symbol in e.jaxkd + e.torch:
            review.locate(symbol)  # raises LookupError


def test_locate():
    from jaxkd.models import cnn

    line = inspect.getsourcelines(cnn.SEBlock.__call__)[1]
    assert review.locate("jaxkd.models.cnn:SEBlock.__call__") == f"jaxkd/models/cnn.py:{line}"
    src, start = inspect.getsourcelines(cnn.SEBlock.__init__)
    hit = next(i for i, s in enumerate(src) if "reduction: int = 16" in s)
    got = review.locate("jaxkd.models.cnn:SEBlock.__init__@reduction: int = 16")
    assert got == f"jaxkd/models/cnn.py:{start + hit}"
    text = (ROOT / "jaxkd/models/cnn.py").read_text().splitlines()
    assert text[int(review.locate("jaxkd.models.cnn:_BLOCKS").rsplit(":", 1)[1]) - 1].startswith("_BLOCKS")
    n = len((ROOT / "torch_ref/cnn.py").read_text().splitlines())
    assert review.locate("torch_ref/cnn.py") == f"torch_ref/cnn.py ({n} lines)"
    assert review.locate("—: no twin") == "—: no twin"
    for bad in ("jaxkd.models.cnn:NoSuchThing", "jaxkd.models.cnn:SEBlock@no such text", "jaxkd/no_such.py",
                "jaxkd.no_such_module:X"):
        with pytest.raises(LookupError):
            review.locate(bad)


# ------------------------------------------------------------------------------------------------ the tiny fake
FAKE_PLAN = """\
# Plan
## Stage 1: Fake stage
### 1.1 Things
| Verification Item | Spec Reference | Check |
|-------------------|----------------|-------|
| Good thing: `a \\| b` | Line 1 | |
| Bad thing | Line 2 | |
| Deviating thing | Line 3 | |
| New thing nobody mapped | Line 4 | |

## Stage 2: Bullets
### 2.1 More
- Renamed test thing

## Execution Plan
| Phase | Stages |
|---|---|
| Phase 1 | 1 |
"""

FAKE_TESTS = """\
def test_ok(record_property):
    record_property("max_abs_diff", 1.5e-07)
    record_property("stats", {"mean": 2e-08, "var": 3e-07})


def test_bad(record_property):
    record_property("max_abs_diff", 0.5)
    assert 0.5 <= 1e-5, "0.5 > 1e-5"


def test_dev():
    pass
"""

FAKE_ENTRIES = [
    item("1.1", "Good thing", ["test_fake.py::test_ok"], ["jaxkd.models.cnn:SEBlock"], ["—: none"], "checks a",
         [("", "max_abs_diff", "max|Δ|"), ("", "stats", "stats max")]),
    item("1.1", "Bad thing", ["test_fake.py::test_bad", "test_fake.py::test_ok"], ["—"], ["—"], "checks b",
         [("", "max_abs_diff", "max|Δ|")], "Critical"),
    item("1.1", "Deviating thing", ["test_fake.py::test_dev"], ["—"], ["—"], "checks c",
         deviation="the spec says X, the code Y; jaxkd does Y, option z gives X", dev_severity="Medium"),
    item("2.1", "Renamed test thing", ["test_fake.py::test_gone"], ["—"], ["—"], "checks d"),
]


def _rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| 1.") or line.startswith("| 2."):
            cells = [c.strip() for c in line.replace("\\|", "¦").strip("|").split("|")]
            rows[cells[1]] = cells
    return rows


@pytest.fixture()
def fake(tmp_path):
    (tmp_path / "plan.md").write_text(FAKE_PLAN)
    (tmp_path / "test_fake.py").write_text(FAKE_TESTS)
    return tmp_path


def test_statuses_and_exit_code_on_a_fake(fake, capsys):
    out = fake / "REVIEW.md"
    code = review.main(["--plan", str(fake / "plan.md"), "--root", str(fake), "--workers", "0", "--out", str(out)],
                       entries=FAKE_ENTRIES)
    assert code == 1
    rows = _rows(out.read_text())
    assert set(rows) == {"Good thing: `a ¦ b`", "Bad thing", "Deviating thing", "New thing nobody mapped",
                         "Renamed test thing"}
    good, bad = rows["Good thing: `a ¦ b`"], rows["Bad thing"]
    assert good[2] == "**PASS**" and "max¦Δ¦ 1.5e-07" in good[5] and "stats max 3.0e-07" in good[5]
    from jaxkd.models import cnn

    # file:line of the symbol (an absolute path: the fake's root is not the repository)
    assert good[3].endswith(f"jaxkd/models/cnn.py:{inspect.getsourcelines(cnn.SEBlock)[1]}")
    assert good[6] == "—" and good[7] == "test_fake::test_ok (1/1)"
    assert bad[2] == "**FAIL**" and "0.5 > 1e-5" in bad[5] and "max¦Δ¦ 5.0e-01" in bad[5] and bad[6] == "Critical"
    dev = rows["Deviating thing"]
    assert dev[2] == "**DEVIATION**" and "option z gives X" in dev[5] and dev[6] == "Medium"
    assert rows["New thing nobody mapped"][2] == "**MISSING**"
    gone = rows["Renamed test thing"]
    assert gone[2] == "**MISSING**" and "test not found or not run: test_fake.py::test_gone" in gone[5]
    assert "**5 items: 1 PASS, 1 DEVIATION, 1 FAIL, 2 MISSING**" in out.read_text()
    assert "Phase 1" not in out.read_text()
    err = capsys.readouterr().err
    assert "FAIL: 1.1 Bad thing" in err and "MISSING: 1.1 New thing nobody mapped" in err


def test_junit_reuse_all_passing_exits_0(fake):
    junit = fake / "run.xml"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        "test_fake.py"], cwd=fake, capture_output=True, text=True)  # default junit family (xunit2)
    assert r.returncode == 1 and junit.is_file()
    plan = fake / "plan.md"
    plan.write_text(FAKE_PLAN.split("| Bad thing")[0] + "\n## Stage 2: none\n")
    out = fake / "out.md"
    assert review.main(["--plan", str(plan), "--junit", str(junit), "--root", str(fake), "--out", str(out)],
                       entries=FAKE_ENTRIES[:1]) == 0
    assert _rows(out.read_text())["Good thing: `a ¦ b`"][2] == "**PASS**"


def test_node_ids_from_junit(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "test_m.py").write_text("")
    xml = tmp_path / "j.xml"
    xml.write_text(textwrap.dedent("""\
        <testsuites><testsuite>
          <testcase classname="pkg.test_m" name="test_a[x-1]" file="pkg/test_m.py"/>
          <testcase classname="pkg.test_m.TestC" name="test_b"><skipped message="no data"/></testcase>
          <testcase classname="pkg.test_m" name="test_c"><properties><property name="d" value="1e-3"/></properties>
            <error message="teardown boom"/></testcase>
        </testsuite></testsuites>"""))
    res = review.parse_junit(xml, tmp_path)
    assert set(res) == {"pkg/test_m.py::test_a[x-1]", "pkg/test_m.py::TestC::test_b", "pkg/test_m.py::test_c"}
    assert res["pkg/test_m.py::TestC::test_b"].outcome == "skipped"
    assert res["pkg/test_m.py::test_c"].outcome == "failed" and res["pkg/test_m.py::test_c"].props == [("d", "1e-3")]
    assert review.selects("pkg/test_m.py::test_a", "pkg/test_m.py::test_a[x-1]")
    assert not review.selects("pkg/test_m.py::test_a", "pkg/test_m.py::test_ab")


@pytest.mark.parametrize("args,message", [
    (["--plan", "/no/such/plan.md"], "review plan not found: /no/such/plan.md"),
    (["--workers", "-1"], "--workers = -1 must be >= 0"),
    (["--junit", "/no/such.xml"], "--junit file not found: /no/such.xml"),
    (["--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys):
    plan = tmp_path / "plan.md"
    plan.write_text(FAKE_PLAN)
    argv = (["--plan", str(plan)] if "--plan" not in args else []) + args + ["--out", str(tmp_path / "o.md")]
    with pytest.raises(SystemExit) as e:
        review.main(argv, entries=FAKE_ENTRIES)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o.md").exists()


def test_empty_plan_is_an_error(tmp_path, capsys):
    (tmp_path / "p.md").write_text("# nothing here\n")
    with pytest.raises(SystemExit) as e:
        review.main(["--plan", str(tmp_path / "p.md"), "--out", str(tmp_path / "o.md")], entries=[])
    assert e.value.code == 2 and "no verification items found" in capsys.readouterr().err


def test_item_is_a_frozen_record():
    e = FAKE_ENTRIES[0]
    assert isinstance(e, Item) and e.tests == ("test_fake.py::test_ok",)
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        e.section = "9"  # type: ignore[misc]

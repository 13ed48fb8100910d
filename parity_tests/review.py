"""`python -m parity_tests.review --out REVIEW.md`: the review of jaxkd against ../shared/spec/review_plan.md.

Reads every verification item of the plan's stages 1-9 from the markdown itself (table rows and, in stage 9, bullet
points), maps each to its tests and locations (:mod:`parity_tests.review_items`), runs those tests with pytest (or
reads the results of an earlier run, ``--junit FILE``) and writes one row per item: the item, its status, where it
lives in jaxkd and in torch_ref (file:line, computed from the symbols), the finding (the measured maxima the tests
record with ``record_property``, or what is checked at which tolerance; for a deviation which behaviour jaxkd
follows and which option gives the other) and a severity.

Status: FAIL when a mapped test fails; MISSING when the item has no mapping entry or a mapped test was not found,
not run or only skipped; DEVIATION when the tests pass and the spec, the original code and jaxkd differ (the row
says how); PASS otherwise. Exit status 1 when any item FAILs or is MISSING, 0 otherwise, 2 on bad command-line
input (one line ``error: ...`` on stderr).

To reuse a full test run (CI): ``pytest -n 2 --junitxml=FILE -o junit_family=xunit1`` then
``python -m parity_tests.review --junit FILE --out REVIEW.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ("PASS", "DEVIATION", "FAIL", "MISSING")


def default_plan() -> Path:
    """$JAXKD_REVIEW_PLAN, else spec/review_plan.md beside $JAXKD_SHARED_DATA, else ../shared/spec/review_plan.md."""
    if os.environ.get("JAXKD_REVIEW_PLAN"):
        return Path(os.environ["JAXKD_REVIEW_PLAN"])
    data = os.environ.get("JAXKD_SHARED_DATA")
    return (Path(data).parent if data else ROOT.parent / "shared") / "spec" / "review_plan.md"


# ------------------------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class PlanItem:
    stage: int
    section: str  # "1.1", "6", "9.4"
    heading: str  # the section's title
    text: str  # the item (first table cell, or the bullet)
    cells: tuple[str, ...] = ()  # the whole table row


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (GFM: an escaped \\| is part of a cell)."""
    inner = re.sub(r"^\||(?<!\\)\|$", "", line.strip())
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def parse_plan(text: str) -> tuple[list[PlanItem], dict[int, str]]:
    """(items, stage titles) of the plan's "## Stage N" sections: the data rows of their tables and the bullet
    points of their "### N.M" subsections."""
    items: list[PlanItem] = []
    titles: dict[int, str] = {}
    stage, section, heading, header_seen = None, "", "", False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("## "):
            m = re.match(r"##\s+Stage\s+(\d+)\s*:?\s*(.*)", line)
            stage = int(m.group(1)) if m else None
            if m:
                titles[stage] = m.group(2).strip()
                section, heading = str(stage), m.group(2).strip()
            continue
        if stage is None:
            continue
        if line.startswith("### "):
            m = re.match(r"###\s+(\d+(?:\.\d+)*)\s*(.*)", line)
            section, heading = (m.group(1), m.group(2).strip()) if m else (str(stage), line[4:].strip())
            continue
        if line.startswith("|"):
            cells = _cells(line)
            if not header_seen:  # the header row, then its |---| separator
                header_seen = True
            elif not all(re.fullmatch(r":?-{3,}:?", c) for c in cells) and cells[0]:
                items.append(PlanItem(stage, section, heading, cells[0], tuple(cells)))
            continue
        header_seen = False
        if re.match(r"[-*]\s+\S", line):
            items.append(PlanItem(stage, section, heading, line[1:].strip()))
    return items, titles


def _norm(s: str) -> str:
    return " ".join(s.split())


def match_entries(plan: list[PlanItem], entries) -> tuple[list, list, list]:
    """(entry or None per plan item, entries matching no item, (item, entries) matched more than once)."""
    found, used, ambiguous = [], set(), []
    for p in plan:
        hits = [i for i, e in enumerate(entries)
                if e.section == p.section and _norm(p.text).startswith(_norm(e.match))]
        if len(hits) > 1:
            ambiguous.append((p, [entries[i] for i in hits]))
        found.append(entries[hits[0]] if hits else None)
        used.update(hits)
    return found, [e for i, e in enumerate(entries) if i not in used], ambiguous


# ------------------------------------------------------------------------------------------------------ locations
def _rel(path: str | Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _count_lines(path: Path) -> int:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return sum(len(f.read_text().splitlines()) for f in files)


def locate(symbol: str, root: Path = ROOT) -> str:
    """``file:line`` of ``module:qualname[@text]`` (the line of ``text`` inside the object's source), of a
    module-level name, or ``path (N lines)`` of a repository file or folder; other strings are returned as is.
    Raises LookupError when a symbol cannot be resolved."""
    if "/" in symbol and ":" not in symbol:
        path = root / symbol
        if not path.exists():
            raise LookupError(f"{symbol}: no such file or folder")
        return f"{symbol}{'/' if path.is_dir() else ''} ({_count_lines(path)} lines)"
    if not re.match(r"(jaxkd|torch_ref)(\.\w+)*:", symbol):
        return symbol
    target, _, anchor = symbol.partition("@")
    module_name, _, qualname = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LookupError(f"{symbol}: {e}") from e
    obj = module
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise LookupError(f"{symbol}: {part!r} not found")
        obj = getattr(obj, part)
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
        lines, start = inspect.getsourcelines(obj)
        file = inspect.getsourcefile(obj)
    else:  # a module-level value: its assignment line
        file = inspect.getsourcefile(module)
        lines = Path(file).read_text().splitlines(keepends=True)
        start = next((i + 1 for i, ln in enumerate(lines) if re.match(rf"{re.escape(qualname)}\s*[:=]", ln)), 0)
        if not start:
            raise LookupError(f"{symbol}: no assignment of {qualname} in {module_name}")
        lines = lines[start - 1:]
    if anchor:
        hit = next((i for i, ln in enumerate(lines) if anchor in ln), None)
        if hit is None:
            raise LookupError(f"{symbol}: {anchor!r} not found in the source of {qualname}")
        start += hit
    return f"{_rel(file, root)}:{start}"


# ---------------------------------------------------------------------------------------------------- the tests
@dataclasses.dataclass
class Result:
    outcome: str  # passed | failed | skipped
    props: list[tuple[str, str]]
    message: str = ""


def collect(files: list[str], root: Path) -> set[str]:
    """Node ids pytest collects from the given test files (those that exist)."""
    files = sorted({f for f in files if (root / f).is_file()})
    if not files:
        return set()
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                       cwd=root, capture_output=True, text=True)
    return {ln.strip() for ln in r.stdout.splitlines() if "::" in ln and not ln.startswith(("ERROR", "FAILED"))}


def selects(test_id: str, node_id: str) -> bool:
    """Whether the mapped ``test_id`` (a node id, or a function / class id) covers the collected ``node_id``."""
    return node_id == test_id or node_id.startswith((test_id + "[", test_id + "::"))


def run_pytest(ids: list[str], root: Path, workers: int, junit: Path) -> int:
    """Runs the given node ids (pytest's output goes to stderr); the results land in the junit file."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
           f"--junitxml={junit}", *(["-n", str(workers), "--dist", "loadfile"] if workers > 0 else []), *ids]
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (io.UnsupportedOperation is an OSError)
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        sys.stderr.write(r.stdout + r.stderr)
        return r.returncode
    return subprocess.run(cmd, cwd=root, stdout=fd, stderr=fd).returncode


def _node_id(case: ET.Element, root: Path) -> str:
    """pytest's node id of a junit testcase: its file (xunit1's ``file`` attribute, else the longest dotted prefix
    of ``classname`` that is a file under ``root``), the classes, the name."""
    classname, name, file = case.get("classname", ""), case.get("name", ""), case.get("file")
    parts = classname.split(".")
    for k in range(len(parts), 0, -1):
        path = "/".join(parts[:k]) + ".py"
        if path == file or (file is None and (root / path).is_file()):
            return "::".join([path, *parts[k:], name])
    return f"{classname}::{name}"


def parse_junit(path: Path, root: Path) -> dict[str, Result]:
    """node id -> Result (outcome, recorded properties, failure message) from a pytest junit xml file."""
    results: dict[str, Result] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    for case in ET.parse(path).getroot().iter("testcase"):
        nid = _node_id(case, root)
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or (el.text or "")).strip().splitlines()[:1]
                message = message[0] if message else tag
                break
        props = [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
        old = results.get(nid)
        if old is None or rank[outcome] > rank[old.outcome]:
            results[nid] = Result(outcome, props + (old.props if old else []), message)
        else:
            old.props.extend(props)
    return results


# --------------------------------------------------------------------------------------------------------- rows
@dataclasses.dataclass
class Row:
    item: PlanItem
    status: str
    jaxkd: str
    torch: str
    finding: str
    severity: str
    tests: str


def _numbers(value: str) -> list[float] | None:
    try:
        return [float(value)]
    except ValueError:
        pass
    if value[:1] in "{[(":
        return [float(x) for x in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf", value)]
    return None


def _measured(entry, matched: dict[str, Result]) -> list[str]:
    out = []
    for sub, pattern, label in entry.measure:
        nums, texts = [], []
        for nid, res in matched.items():
            if sub not in nid:
                continue
            for name, value in res.props:
                if re.search(pattern, name):
                    n = _numbers(value)
                    if n is None:
                        texts.append(value)
                    else:
                        nums.extend(n)
        if nums:
            top = max(nums)
            out.append(f"{label} {int(top):,}" if all(float(x).is_integer() for x in nums) else f"{label} {top:.1e}")
        elif texts:
            out.append(f"{label}: {'; '.join(sorted(set(texts)))}")
    return out


def _short(test_id: str) -> str:
    path, _, rest = test_id.partition("::")
    return f"{Path(path).stem}::{rest}"


def build_row(p: PlanItem, entry, results: dict[str, Result], root: Path = ROOT) -> Row:
    """The review row of one plan item from its mapping entry (or None) and the test results."""
    if entry is None:
        return Row(p, "MISSING", "—", "—", "no mapping entry in parity_tests/review_items*.py, so no test",
                   "High", "—")
    problems, failed, counts, matched = [], [], [], {}
    for tid in entry.tests:
        mine = {nid: r for nid, r in results.items() if selects(tid, nid)}
        matched.update(mine)
        n_pass = sum(r.outcome == "passed" for r in mine.values())
        counts.append(f"{_short(tid)} ({n_pass}/{len(mine)})")
        failed += [(nid, r) for nid, r in mine.items() if r.outcome == "failed"]
        if not mine:
            problems.append(f"test not found or not run: {tid}")
        elif not n_pass and not any(r.outcome == "failed" for r in mine.values()):
            problems.append(f"only skipped: {_short(tid)} ({next(iter(mine.values())).message})")
    locs = []
    for symbols in (entry.jaxkd, entry.torch):
        try:
            locs.append("<br>".join(locate(s, root) for s in symbols) or "—")
        except LookupError as e:
            problems.append(f"location not found: {e}")
            locs.append("?")
    parts = [entry.check]
    if p.stage == 8 and len(p.cells) > 1:  # line counts: where the original file's content lives in jaxkd
        ours = sum(_count_lines(root / s) for s in entry.jaxkd if "/" in s and (root / s).exists())
        parts.insert(0, f"the original's file: {p.cells[1]} lines (spec); its jaxkd counterparts: {ours:,} lines")
    measured = _measured(entry, matched)
    if measured:
        parts.append("Measured: " + "; ".join(measured))
    if failed:
        status = "FAIL"
        parts.append("FAILED: " + "; ".join(f"{_short(n)}: {r.message}" for n, r in failed[:3])
                     + (f"; and {len(failed) - 3} more" if len(failed) > 3 else ""))
    elif problems:
        status = "MISSING"
    else:
        status = "DEVIATION" if entry.deviation else "PASS"
    if problems:
        parts.append("; ".join(problems))
    if entry.deviation:
        parts.append(f"Deviation: {entry.deviation}")
    severity = {"PASS": "—", "DEVIATION": entry.dev_severity}.get(status, entry.severity)
    return Row(p, status, locs[0], locs[1], ". ".join(s.rstrip(". ") for s in parts) + ".", severity,
               "<br>".join(counts))


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.status in ("FAIL", "MISSING") for r in rows) else 0


# ------------------------------------------------------------------------------------------------------- output
def _cell(s: str) -> str:
    return _norm(s).replace("|", "\\|")


def render(rows: list[Row], titles: dict[int, str], plan_path: str, source: str, orphans=()) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    out = ["# jaxkd review against the review plan", "",
           f"Generated by `python -m parity_tests.review` from `{plan_path}` ({source}); do not edit by hand.", "",
           f"**{len(rows)} items: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + "**", "",
           "Status: PASS = the mapped tests pass; DEVIATION = they pass, and the spec, the original code and jaxkd "
           "differ as the finding says (which behaviour jaxkd follows by default, which option gives the other); "
           "FAIL = a mapped test fails; MISSING = no test ran for it. Severity: the impact of the failure or "
           "deviation (— for PASS). Locations are file:line of the implementation in jaxkd and of its twin in "
           "torch_ref (the reference the parity tests compare against). Stage 3's DDP and NCCL items map to their "
           "JAX equivalents (a data mesh, jax.distributed, XLA's cross-device reductions), tested on simulated CPU "
           "devices; stage 8's line counts become where each component lives in jaxkd.", ""]
    for stage in sorted({r.item.stage for r in rows}):
        out += [f"## Stage {stage}: {titles.get(stage, '')}", "",
                "| # | Item | Status | jaxkd | torch_ref | Finding | Severity | Tests (passed/run) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        n = {}
        for r in (r for r in rows if r.item.stage == stage):
            n[r.item.section] = n.get(r.item.section, 0) + 1
            num = f"{r.item.section}.{n[r.item.section]}"
            out.append("| " + " | ".join(_cell(c) for c in (num, r.item.text, f"**{r.status}**", r.jaxkd, r.torch,
                                                               r.finding, r.severity, r.tests)) + " |")
        out.append("")
    if orphans:
        out += ["## Mapping entries without a plan item", ""]
        out += [f"- {e.section}: {e.match}" for e in orphans] + [""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv=None, entries=None) -> int:
    parser = _Parser(prog="python -m parity_tests.review", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="REVIEW.md", help="markdown file to write ('-' = stdout); default REVIEW.md")
    parser.add_argument("--plan", default=None, help=f"the review plan (default {default_plan()})")
    parser.add_argument("--junit", default=None, help="reuse this pytest junit xml instead of running the tests")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0 = none); default 2")
    parser.add_argument("--root", default=str(ROOT), help="directory pytest runs in (default: the repository)")
    args = parser.parse_args(argv)
    plan_path = Path(args.plan) if args.plan else default_plan()
    root = Path(args.root)
    if args.workers < 0:
        parser.error(f"--workers = {args.workers} must be >= 0")
    if not plan_path.is_file():
        parser.error(f"review plan not found: {plan_path} (pass --plan FILE or set JAXKD_REVIEW_PLAN)")
    if args.junit and not Path(args.junit).is_file():
        parser.error(f"--junit file not found: {args.junit}")
    if not root.is_dir():
        parser.error(f"--root is not a directory: {root}")
    plan, titles = parse_plan(plan_path.read_text())
    if not plan:
        parser.error(f"no verification items found in {plan_path} (expected '## Stage N' sections)")
    if entries is None:
        from parity_tests.review_items import all_items

        entries = all_items()
    found, orphans, ambiguous = match_entries(plan, entries)
    for p, es in ambiguous:
        print(f"warning: {p.section} {p.text!r} matches {len(es)} mapping entries; the first is used", file=sys.stderr)
    t0 = time.time()
    if args.junit:
        results, source = parse_junit(Path(args.junit), root), f"results of {args.junit}"
    else:
        wanted = sorted({t for e in found if e for t in e.tests})
        collected = collect([t.split("::")[0] for t in wanted], root)
        ids = [t for t in wanted if any(selects(t, c) for c in collected)]
        ids = [t for t in ids if not any(o != t and selects(o, t) for o in ids)]  # a function id covers its params
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "review.xml"
            rc = run_pytest(ids, root, args.workers, junit) if ids else 0
            if rc not in (0, 1):
                print(f"warning: pytest exited with status {rc}", file=sys.stderr)
            results = parse_junit(junit, root) if junit.is_file() else {}
        source = f"{len(ids)} mapped test ids run with pytest -n {args.workers}"
    rows = [build_row(p, e, results, root) for p, e in zip(plan, found)]
    text = render(rows, titles, plan_path.name, source, orphans)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(args.out).write_text(text + "\n")
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in STATUSES)
    print(f"review: {len(rows)} items: {counts}; tests {time.time() - t0:.0f} s; wrote {args.out}", file=sys.stderr)
    for r in rows:
        if r.status in ("FAIL", "MISSING"):
            print(f"  {r.status}: {r.item.section} {r.item.text}", file=sys.stderr)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())

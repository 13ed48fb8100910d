"""python -m jaxkd.study: the quickstart suite end to end (--smoke, 2 seeds) through the CLI, an interrupted study
that resumes, the results files and their schema, the paired interval's arithmetic, the suites' definitions and
bad input.

One study is built once per session (shared by pytest-xdist workers through a file lock) in phases that leave it
complete: (1) `--only teacher`, as a study stopped after its first run; (2) the full command with `--jobs 2`, which
must skip the teacher; (3) one run's summary.json removed (a run killed after its last checkpoint), the command
again: that run resumes through the trainer, the others are skipped; (4) the command once more: nothing runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxkd.study import plan as plan_lib
from jaxkd.study import run_study, stats
from jaxkd.study.suites import SUITES, Run, StudyError, Suite, get_suite, validate_suite

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["quickstart", "--workdir", "q", "--smoke", "--seeds", "2", "--teacher-seeds", "1"]


def _env() -> dict:
    """Offline, CPU; the test session's compilation cache (conftest.py), which the other tests' smoke presets fill."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXKD_OFFLINE="1")
    env.pop("XLA_FLAGS", None)
    return env


def _study(args, cwd: Path, env: dict, timeout: int = 900) -> dict:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "jaxkd.study", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "wall_s": time.time() - t0}


def _build(base: Path) -> dict:
    env = _env()
    phases = {"first": _study([*ARGS, "--only", "teacher"], base, env)}
    assert phases["first"]["rc"] == 0, phases["first"]["stderr"][-3000:]
    phases["full"] = _study([*ARGS, "--jobs", "2"], base, env)  # two runs at a time, each on its own core
    assert phases["full"]["rc"] == 0, phases["full"]["stdout"][-3000:] + phases["full"]["stderr"][-3000:]
    (base / "q" / "deit_kd" / "seed1" / "summary.json").unlink()
    phases["resume"] = _study(ARGS, base, env)
    phases["again"] = _study(ARGS, base, env)
    return phases


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """(study directory, {phase: rc/stdout/stderr/wall_s}) of the quickstart smoke study, built once."""
    tmp = tmp_path_factory.getbasetemp()
    base = (tmp.parent if os.environ.get("PYTEST_XDIST_WORKER") else tmp) / "study_quickstart"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / "phases.json"
        if not done.exists():
            phases = _build(base)
            done.write_text(json.dumps(phases))
        phases = json.loads(done.read_text())
    return base / "q", phases


def _results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def test_study_writes_results(study):
    d, phases = study
    for name in ("RESULTS.md", "results.json", "results.png", "study.json"):
        assert (d / name).is_file(), name
    assert (d / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (d / "RESULTS.md").read_text()
    for text in ("# Study `quickstart`", "| deit_kd | distilled |", "| vit | baseline |", "| teacher | teacher |",
                 "paired difference", "device: cpu", "jax "):
        assert text in md, text
    for run in ("teacher/seed0", "vit/seed0", "vit/seed1", "deit_kd/seed0", "deit_kd/seed1"):
        assert (d / run / "summary.json").is_file(), run
    assert not (d / "teacher" / "seed1").exists()  # --teacher-seeds 1: one teacher for both student seeds


def test_results_json_schema_twins_and_deltas(study):
    d, _ = study
    res = _results(d)
    assert res["suite"] == "quickstart" and res["device"] == "cpu" and res["smoke"] is True
    assert res["versions"]["jax"] and res["versions"]["flax"]
    assert set(res["runs"]) == {"teacher", "vit", "deit_kd"}
    keys = {"role", "twin", "teacher", "test_accuracy", "wall_s", "images_per_s", "delta"}
    for name, r in res["runs"].items():
        assert keys <= set(r), name
        assert set(r["test_accuracy"]) >= {"mean", "std", "per_seed"}
        per = r["test_accuracy"]["per_seed"]
        assert r["test_accuracy"]["mean"] == pytest.approx(sum(per.values()) / len(per))
        assert r["wall_s"] > 0 and r["images_per_s"] > 0
        for seed, acc in per.items():
            summary = json.loads((d / name / f"seed{seed}" / "summary.json").read_text())
            assert acc == summary["test_accuracy"]
            config = (d / name / f"seed{seed}" / "config.json").read_bytes()
            assert r["config_sha256"][seed] == hashlib.sha256(config).hexdigest()
            assert json.loads(config)["seed"] == int(seed)
    t, v, k = res["runs"]["teacher"], res["runs"]["vit"], res["runs"]["deit_kd"]
    assert (t["role"], t["twin"], t["teacher"], t["delta"]) == ("teacher", None, None, None)
    assert list(t["test_accuracy"]["per_seed"]) == ["0"] and t["test_accuracy"]["std"] is None
    assert (v["role"], v["twin"], v["teacher"], v["delta"]) == ("baseline", None, None, None)
    assert (k["role"], k["twin"], k["teacher"]) == ("distilled", "vit", "teacher")
    assert list(v["test_accuracy"]["per_seed"]) == list(k["test_accuracy"]["per_seed"]) == ["0", "1"]
    # the paired difference: distilled minus twin, seed by seed
    a, b = k["test_accuracy"]["per_seed"], v["test_accuracy"]["per_seed"]
    want = stats.paired_delta([a["0"], a["1"]], [b["0"], b["1"]])
    assert k["delta"]["mean"] == pytest.approx(want["mean"]) and k["delta"]["n"] == 2
    assert k["delta"]["ci95"] == pytest.approx(want["ci95"])
    assert k["teacher_seeds"] == {"0": 0, "1": 0}
    assert k["teacher_accuracy"]["mean"] == pytest.approx(t["test_accuracy"]["per_seed"]["0"])
    # the students' configs: the teacher's workdir for the distilled run, no teacher for the baseline
    for seed in ("0", "1"):
        kd = json.loads((d / "deit_kd" / f"seed{seed}" / "config.json").read_text())
        assert kd["distillation"]["enabled"]
        assert Path(kd["distillation"]["teacher_checkpoint"]) == Path("q/teacher/seed0")
        base = json.loads((d / "vit" / f"seed{seed}" / "config.json").read_text())
        assert not base["distillation"]["enabled"] and not base["vit"]["distillation"]


def test_interrupted_study_resumes(study):
    d, p = study
    assert "teacher/seed0: done" in p["first"]["stdout"] and "vit/seed0" not in p["first"]["stdout"]
    assert "study quickstart: results in" in p["first"]["stdout"]  # a partial study reports too
    full = p["full"]["stdout"]
    assert "teacher/seed0: finished earlier" in full and "skipped" in full
    assert full.count(": done in") == 4 and "ETA" in full and "2 at a time" in full
    resume = p["resume"]["stdout"]
    assert p["resume"]["rc"] == 0 and "deit_kd/seed1: resuming" in resume
    assert resume.count(": done in") == 1 and resume.count(": finished earlier (test") == 4
    log = (d / "logs" / "deit_kd-seed1.log").read_text()
    assert "resuming from step" in log  # the trainer's own resume, from the last checkpoint
    again = p["again"]["stdout"]
    assert p["again"]["rc"] == 0 and again.count(": finished earlier (test") == 5 and ": done in" not in again
    ledger = json.loads((d / "study.json").read_text())["runs"]
    assert [len(ledger[k]["attempts"]) for k in sorted(ledger)] == [1, 2, 1, 1, 1]  # deit_kd/seed1 ran twice
    assert p["again"]["wall_s"] < 60  # nothing trained
    study = json.loads((d / "study.json").read_text())
    assert 0 < study["elapsed_s"] < sum(p[k]["wall_s"] for k in ("first", "full", "resume"))  # the study's clock


def test_changed_config_is_refused(study, monkeypatch):
    """The finished study, planned again: every job finished; with another config: refused before anything changes."""
    d, _ = study
    monkeypatch.chdir(d.parent)
    suite, before = get_suite("quickstart"), (d / "study.json").read_text()
    lines = []
    assert run_study(suite, Path("q"), seeds=2, smoke=True, teacher_seeds=1, dry_run=True, out=lines.append) == 0
    assert sum("[finished]" in x for x in lines) == 5
    with pytest.raises(StudyError, match="holds a run with a different config"):
        run_study(suite, Path("q"), seeds=2, smoke=True, teacher_seeds=1, sets=["training.learning_rate=0.01"])
    assert (d / "study.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["nosuch", "--workdir", "x"], "unknown suite 'nosuch'"),
    (["quickstart", "--workdir", "x", "--only", "vit,nosuch"], "unknown run 'nosuch'"),
])
def test_bad_input_is_one_error_line(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxkd.study", *args], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, JAXKD_COMPILATION_CACHE="0"), timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_bad_input_in_process(tmp_path):
    suite = get_suite("quickstart")
    with pytest.raises(StudyError, match="--set seed"):
        plan_lib.plan(suite, tmp_path, seeds=2, sets=["seed=3"])
    with pytest.raises(StudyError, match="unknown config field 'training.nope'"):
        plan_lib.plan(suite, tmp_path, seeds=1, sets=["training.nope=1"])
    with pytest.raises(StudyError, match="KEY=VALUE"):
        plan_lib.plan(suite, tmp_path, seeds=1, sets=["training.num_epochs"])
    with pytest.raises(StudyError, match="--seeds 0"):
        plan_lib.plan(suite, tmp_path, seeds=0)
    with pytest.raises(StudyError, match="unknown suite"):
        get_suite("nosuch")


def test_plan_teachers_per_seed_and_overrides(tmp_path):
    suite = get_suite("quickstart")
    jobs = plan_lib.plan(suite, tmp_path, seeds=3, smoke=True, sets=["training.num_epochs=2"])
    assert [j.key for j in jobs][:3] == ["teacher/seed0", "vit/seed0", "deit_kd/seed0"]  # seed-major, teacher first
    kd = {j.seed: j for j in jobs if j.run.name == "deit_kd"}
    assert {s: j.teacher for s, j in kd.items()} == {0: ("teacher", 0), 1: ("teacher", 1), 2: ("teacher", 2)}
    cfg = json.loads(kd[2].config_json)
    assert cfg["distillation"]["teacher_checkpoint"] == str(tmp_path / "teacher" / "seed2")
    assert cfg["seed"] == 2 and cfg["training"]["num_epochs"] == 2 and kd[2].spec.endswith("quickstart_kd.py:smoke")
    # one teacher: every student seed k uses teacher seed k mod 1; the teacher trains once
    jobs = plan_lib.plan(suite, tmp_path, seeds=3, teacher_seeds=1)
    assert [j.seed for j in jobs if j.run.name == "teacher"] == [0]
    assert {j.teacher for j in jobs if j.run.name == "deit_kd"} == {("teacher", 0)}
    # --only: the run and the teachers it needs; not its twin
    jobs = plan_lib.plan(suite, tmp_path, seeds=1, only=["deit_kd"])
    assert {j.run.name for j in jobs if j.selected} == {"teacher", "deit_kd"}


def test_token_distillation_teacher_goes_to_ss_field(tmp_path):
    jobs = plan_lib.plan(get_suite("cifar"), tmp_path, seeds=1, smoke=True, only=["deit_ss_orig"])
    job = next(j for j in jobs if j.key == "deit_ss_orig/seed0")
    cfg = json.loads(job.config_json)
    assert cfg["ss_distillation"]["enabled"] and cfg["ss_distillation"]["teacher_type"] == "jaxkd"
    assert cfg["ss_distillation"]["teacher_checkpoint"] == str(tmp_path / "vit_orig" / "seed0")
    assert job.teacher == ("vit_orig", 0)


@pytest.mark.parametrize("name", list(SUITES))
@pytest.mark.parametrize("smoke", [False, True])
def test_every_suite_loads_its_presets(name, smoke, tmp_path):
    """Every run of every suite: roles, twins and teachers consistent, and each preset (or its smoke variant) with
    the suite's overrides loads and validates."""
    suite = get_suite(name)
    jobs = plan_lib.plan(suite, tmp_path, seeds=1, smoke=smoke)
    assert all(j.config_json and j.status == "new" for j in jobs)
    for r in suite.runs:
        if r.role == "distilled":
            assert suite.run(r.twin).role == "baseline"
            cfg = json.loads(next(j.config_json for j in jobs if j.run is r))
            assert cfg["distillation"]["enabled"] or cfg["ss_distillation"]["enabled"]


def test_suite_validation():
    t = Run("t", "configs/quickstart.py", "teacher")
    b = Run("b", "configs/quickstart_kd.py", "baseline")
    with pytest.raises(StudyError, match="needs 'twin'"):
        validate_suite(Suite("s", "", (t, b, Run("d", "x.py", "distilled", twin="t", teacher="t"))))
    with pytest.raises(StudyError, match="needs 'teacher'"):
        validate_suite(Suite("s", "", (t, b, Run("d", "x.py", "distilled", twin="b", teacher="zz"))))
    with pytest.raises(StudyError, match="unique"):
        validate_suite(Suite("s", "", (t, t)))
    with pytest.raises(StudyError, match="role"):
        validate_suite(Suite("s", "", (Run("x", "x.py", "student"),)))
    with pytest.raises(StudyError, match="'analyze' names runs it does not have"):
        validate_suite(Suite("s", "", (t, b), analyze=("b", "zz")))
    # dependency order: a student listed before its teacher is trained after it
    s = validate_suite(Suite("s", "", (Run("d", "x.py", "distilled", twin="b", teacher="t"), b, t)))
    assert [r.name for r in s.runs].index("t") < [r.name for r in s.runs].index("d")
    assert Run("x", "configs/x.py:soft", "baseline").smoke_spec() == "configs/x.py:soft,smoke"
    assert Run("x", "configs/x.py", "baseline").smoke_spec() == "configs/x.py:smoke"


def test_paired_interval_arithmetic():
    a = [0.981, 0.975, 0.990, 0.984, 0.979]
    b = [0.970, 0.972, 0.981, 0.975, 0.980]
    d = [x - y for x, y in zip(a, b)]
    m = sum(d) / 5
    sd = (sum((x - m) ** 2 for x in d) / 4) ** 0.5
    got = stats.paired_delta(a, b)
    assert got["mean"] == pytest.approx(m) and got["std"] == pytest.approx(sd) and got["n"] == 5
    half = 2.7764451051977987 * sd / 5 ** 0.5  # t(0.975, 4)
    assert got["ci95"] == pytest.approx([m - half, m + half], rel=1e-9)
    assert stats.paired_delta(a, b, use_scipy=False)["ci95"] == pytest.approx(got["ci95"], abs=1e-7)  # t table
    one = stats.paired_delta([0.9], [0.8])
    assert one["mean"] == pytest.approx(0.1) and one["ci95"] is None and one["std"] is None
    with pytest.raises(ValueError):
        stats.paired_delta([0.9, 0.8], [0.8])


def test_t_quantiles_match_scipy():
    t = pytest.importorskip("scipy.stats").t
    for df in (1, 2, 3, 4, 9, 10, 29, 30, 31, 45, 100, 1000):
        assert stats.t975(df, use_scipy=False) == pytest.approx(t.ppf(0.975, df), abs=2e-5), df
        assert stats.t975(df) == pytest.approx(t.ppf(0.975, df), rel=1e-12)


def test_mnist_suite_smoke_end_to_end(shared_data_dir, tmp_path):
    """The `mnist` suite's --smoke through the CLI on the real MNIST (seconds a run): teacher, ViT and both
    distilled DeiTs train, and RESULTS.md / results.json hold every run with the distilled runs paired to the ViT."""
    # (deit_soft differs from deit_hard by two config values: --only keeps CI inside its budget)
    r = _study(["mnist", "--workdir", "m", "--smoke", "--seeds", "1", "--only", "cnn,vit,deit_hard"], tmp_path,
               _env())
    assert r["rc"] == 0, r["stdout"][-3000:] + r["stderr"][-3000:]
    res = _results(tmp_path / "m")
    assert res["suite"] == "mnist" and res["smoke"] is True
    ran = {n: x for n, x in res["runs"].items() if n != "deit_soft"}  # (listed, not run: --only)
    assert {n: x["role"] for n, x in ran.items()} == {"cnn": "teacher", "vit": "baseline", "deit_hard": "distilled"}
    for name, x in ran.items():
        assert list(x["test_accuracy"]["per_seed"]) == ["0"], name
        assert 0.0 <= x["test_accuracy"]["mean"] <= 1.0 and x["images_per_s"] > 0, name
    for name in ("deit_hard",):
        x = res["runs"][name]
        assert x["twin"] == "vit" and x["teacher"] == "cnn" and x["delta"]["n"] == 1
        kd = json.loads((tmp_path / "m" / name / "seed0" / "config.json").read_text())
        assert kd["distillation"]["distillation_type"] == name.split("_")[1]
    md = (tmp_path / "m" / "RESULTS.md").read_text()
    assert "# Study `mnist`" in md and "| deit_hard | vit |" in md and "| cnn | teacher |" in md


def test_cifar_teachers_smoke_trains_and_analyses_the_students(shared_data_dir, tmp_path):
    """`cifar-teachers --smoke` through the CLI on the real CIFAR-10 JPEGs, the ResNet-18 half (the ConvNeXt V2 pair
    trains in tests/test_cnn_teachers.py): the teacher, the DeiT-Tiny alone and distilled from it train, the
    distilled run is paired with its twin, then `python -m jaxkd.analyze` compares the two students in DIR/analysis/
    (every metric, each against its own teacher where it has one); a second run finds the analysis up to date."""
    args = ["cifar-teachers", "--workdir", "ct", "--smoke", "--only", "deit,deit_resnet18"]
    r = _study(args, tmp_path, _env())
    assert r["rc"] == 0, r["stdout"][-3000:] + r["stderr"][-3000:]
    assert "analysis: deit, deit_resnet18 (log:" in r["stdout"] and "analysis: done" in r["stdout"], r["stdout"]
    res = _results(tmp_path / "ct")
    assert res["suite"] == "cifar_teachers" and res["runs"]["deit_resnet18"]["twin"] == "deit"
    assert res["runs"]["deit_resnet18"]["delta"]["n"] == 1 and res["runs"]["resnet18"]["role"] == "teacher"
    analysis = json.loads((tmp_path / "ct" / "analysis" / "analysis.json").read_text())
    assert analysis["settings"]["split"] == "validation"
    assert len(analysis["runs"]) == 2, list(analysis["runs"])
    for png in ("cka_comparison.png", "attention_distances.png", "hessian.png"):
        assert (tmp_path / "ct" / "analysis" / png).stat().st_size > 0, png
    again = _study(args, tmp_path, _env())
    assert again["rc"] == 0 and "analysis: up to date" in again["stdout"], again["stdout"][-2000:]

"""`python -m jaxkd.study SUITE --workdir DIR [--seeds N] [--smoke] [--only RUN,...] [--set KEY=VALUE ...]`

Runs a suite's jobs one after another, each an ordinary `python -m jaxkd.train` in a subprocess (a crash of one run
does not end the study; its dependants are skipped, the rest go on), then writes DIR/results.json, DIR/RESULTS.md
and DIR/results.png from what is on disk. Interrupted (Ctrl-C, SIGTERM: passed on to the run, which saves a
checkpoint) and started again with the same command, it skips finished runs and the trainer resumes the unfinished
one. A suite that names runs to analyse then runs `python -m jaxkd.analyze` on their seed-0 models into
DIR/analysis/ (again only when they changed). DIR/study.json is the study's ledger (each job's attempts, wall time,
exit code, device); DIR/logs/ holds each run's output. The runs share jaxkd's persistent compilation cache
(jaxkd.cache): a rerun or a resume compiles little (the seed is a constant of the compiled programs, so a new seed
compiles anew).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from jaxkd.study import report
from jaxkd.study.plan import REPO, Job, plan
from jaxkd.study.suites import SUITES, StudyError, Suite, get_suite
from jaxkd.train.reporting import write_json_atomic

__all__ = ["main", "run_study", "versions", "device_kind"]


def versions() -> dict:
    import jaxkd

    out = {}
    for pkg in ("jax", "jaxlib", "flax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    # Not metadata.version("jaxkd"): the distribution is jaxkd-distill (jaxkd on the index is another project).
    out["jaxkd"] = jaxkd.__version__
    out["python"] = sys.version.split()[0]
    try:
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        out["git"] = (git.stdout.strip() or None) if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        out["git"] = None
    return out


def device_kind() -> str:
    """The device the runs use, as JAX names it ('cpu', 'NVIDIA H200', ...; 'N x kind' for several). Asked in this
    process only when no run is training, and without taking the accelerator's memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    devs = jax.devices()
    kind = devs[0].device_kind
    return f"{len(devs)} x {kind}" if len(devs) > 1 else kind


def _fmt(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _Signals:
    """SIGINT / SIGTERM: remembered and passed on to the running trainer, which saves a checkpoint and exits."""

    def __init__(self):
        self.signum, self.child, self._old = 0, None, {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except OSError:
                pass

    def restore(self):
        for sig, h in self._old.items():
            signal.signal(sig, h)


class Ledger:
    """DIR/study.json: per job its attempts (start, wall time, exit code), total wall time and device."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            self.data = {}
        self.data.setdefault("runs", {})

    @property
    def runs(self) -> dict:
        return self.data["runs"]

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)


def _estimate(job: Job, ledger: Ledger, jobs: list[Job]) -> float | None:
    same = [e["wall_s"] for k, e in ledger.runs.items() if k.split("/")[0] == job.run.name and e.get("rc") == 0
            and e.get("wall_s")]
    if same:
        return sum(same) / len(same)
    known = [e["wall_s"] for e in ledger.runs.values() if e.get("rc") == 0 and e.get("wall_s")]
    return sum(known) / len(known) if known else None


def _eta(rest: list[Job], ledger: Ledger, jobs: list[Job]) -> float | None:
    total = 0.0
    for j in rest:
        est = _estimate(j, ledger, jobs)
        if est is None:
            return None
        total += est
    return total


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def run_study(suite: Suite, workdir: Path, *, seeds: int, smoke: bool = False, only=None, sets=(),
              teacher_seeds: int | None = None, force: bool = False, dry_run: bool = False, report_only: bool = False,
              analysis: bool = True, command: str | None = None, out: Callable[[str], None] = print) -> int:
    """Plans, runs and reports a suite; returns the exit code (0, 1 when a run failed, 128+signal if stopped)."""
    jobs = plan(suite, workdir, seeds=seeds, smoke=smoke, only=only, sets=sets, teacher_seeds=teacher_seeds)
    todo = [j for j in jobs if j.selected]
    conflicts = [j for j in todo if j.status == "conflict"]
    if conflicts and not force and not report_only:
        j = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise StudyError(f"{j.workdir} holds a run with a different config{more}: use another --workdir, or --force "
                         "to move the old runs aside (into replaced-<time>/) and train them again")
    if dry_run:
        for j in todo:
            cmd = " ".join(shlex.quote(x) for x in j.command("python", force=j.status == "conflict"))
            out(f"{j.key} [{j.status}]" + (f" teacher {j.teacher[0]}/seed{j.teacher[1]}" if j.teacher else "")
                + f"\n    {cmd}")
        chosen = [j for j in jobs if j.run.name in suite.analyze and j.seed == 0 and j.selected]
        if analysis and chosen:
            cmd = _analysis_command(chosen, workdir, smoke)
            out("analysis\n    " + " ".join(shlex.quote(x) for x in ["python", *cmd[1:]]))
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(workdir / "study.json")
    ledger.data.update(suite=suite.name, smoke=smoke, seeds=seeds)
    env = dict(os.environ)  # the trainer turns on the persistent compilation cache itself (jaxkd.cache)
    failed: set[str] = set()
    code = 0
    if not report_only:
        code = _execute(todo, jobs, ledger, workdir, env, force, out, failed)
        if code >= 128:
            out(f"study stopped by signal {code - 128}: run the same command to go on (finished runs are skipped, "
                "the unfinished one resumes)")
            return code
    # --- report ------------------------------------------------------------------------------------------------
    for j in jobs:  # the device of each run: the trainer's summary records it; else asked here, once
        e = ledger.runs.get(j.key)
        if e and e.get("rc") == 0 and not e.get("device"):
            e["device"] = (j.summary() or {}).get("device")
    need_device = [k for k, e in ledger.runs.items() if e.get("rc") == 0 and not e.get("device")]
    device = None
    if need_device or not any(e.get("device") for e in ledger.runs.values()):
        device = device_kind()
        for k in need_device:
            ledger.runs[k]["device"] = device
    ledger.save()
    vers = versions()
    meta = {"versions": vers, "smoke": smoke, "seeds": seeds, "device": device,
            "teacher_seeds": teacher_seeds if teacher_seeds is not None else suite.teacher_seeds,
            "command": command, "generated": datetime.datetime.now().isoformat(timespec="seconds")}
    res = report.collect(suite, jobs, ledger.runs, meta)
    report.write_all(res, workdir)
    out(f"study {suite.name}: results in {workdir / 'RESULTS.md'}, {workdir / 'results.json'}, "
        f"{workdir / 'results.png'}")
    for name, r in res["runs"].items():
        a, d = r["test_accuracy"], r["delta"]
        acc = f"{100 * a['mean']:.2f} %" if a["mean"] is not None else r["status"]
        if a["std"] is not None:
            acc += f" ± {100 * a['std']:.2f}"
        delta = ""
        if d and d.get("mean") is not None:
            ci = d.get("ci95")
            delta = f"  Δ vs {r['twin']} {100 * d['mean']:+.2f} pp" + (
                f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")
        out(f"  {name:<16} {r['role']:<9} {acc} (n={a['n']}){delta}")
    if analysis and suite.analyze and not report_only:
        rc = _analyze(suite, jobs, ledger, workdir, smoke, env, out)
        code = code or (1 if rc else 0)
    return code or (1 if failed else 0)


# What --smoke asks of the analysis: seconds on CPU, every metric still computed.
_SMOKE_ANALYSIS = ["--num-samples", "16", "--chunk-size", "16", "--min-probes", "2", "--max-probes", "3",
                   "--top-k", "2"]


def _analysis_command(chosen: list[Job], workdir: Path, smoke: bool) -> list[str]:
    return [sys.executable, "-m", "jaxkd.analyze", *(str(j.workdir) for j in chosen),
            "--names", *(j.run.name for j in chosen), "--out", str(workdir / "analysis"), "--no-progress",
            *(_SMOKE_ANALYSIS if smoke else [])]


def _analyze(suite: Suite, jobs: list[Job], ledger: Ledger, workdir: Path, smoke: bool, env: dict,
             out: Callable[[str], None]) -> int:
    """`python -m jaxkd.analyze` on the seed-0 models of `suite.analyze` (those --only selected), into
    DIR/analysis/ (its JSON and PNGs); skipped while one of them has not finished, and when
    DIR/analysis/analysis.json is newer than all of them.
    Returns the analysis' exit code (0 when skipped)."""
    by_key = {j.key: j for j in jobs}
    names = [n for n in suite.analyze if (j := by_key.get(f"{n}/seed0")) is not None and j.selected]
    if not names:
        out("analysis: skipped: --only selected none of " + ", ".join(suite.analyze))
        return 0
    chosen = [by_key[f"{name}/seed0"] for name in names]
    missing = [name for name, j in zip(names, chosen) if j.refresh() != "finished"]
    if missing:
        out(f"analysis: skipped until {', '.join(m + '/seed0' for m in missing)} finished")
        return 0
    result = workdir / "analysis" / "analysis.json"
    newest = max((j.workdir / "summary.json").stat().st_mtime for j in chosen)
    if result.exists() and result.stat().st_mtime >= newest:
        out(f"analysis: up to date ({result})")
        return 0
    cmd = _analysis_command(chosen, workdir, smoke)
    log_path = workdir / "logs" / "analysis.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out(f"analysis: {', '.join(names)} (log: {log_path})")
    t0 = time.time()
    with open(log_path, "a") as log:
        log.write(f"=== {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{' '.join(shlex.quote(x) for x in cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.time() - t0
    ledger.data["analysis"] = {"rc": rc, "wall_s": round(wall, 3), "runs": names}
    ledger.save()
    if rc == 0:
        out(f"analysis: done in {_fmt(wall)}: {result.parent}")
    else:
        out(f"analysis: FAILED (exit {rc}) after {_fmt(wall)}: {_tail(log_path)} (log: {log_path})")
    return rc


def _execute(todo: list[Job], jobs: list[Job], ledger: Ledger, workdir: Path, env: dict, force: bool,
             out: Callable[[str], None], failed: set[str]) -> int:
    n = len(todo)
    done_before = sum(j.status == "finished" for j in todo)
    out(f"study: {n} runs in {workdir}" + (f", {done_before} finished earlier (skipped)" if done_before else ""))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sig = _Signals()
    t_study = time.time()
    by_key = {j.key: j for j in jobs}
    try:
        for i, job in enumerate(todo, 1):
            prefix = f"[{i}/{n}] {job.key}"
            if job.status == "finished":
                s = job.summary() or {}
                out(f"{prefix}: finished earlier (test {s.get('test_accuracy', float('nan')):.4f}), skipped")
                continue
            if job.teacher:
                t_key = f"{job.teacher[0]}/seed{job.teacher[1]}"
                t_job = by_key.get(t_key)
                if t_key in failed or t_job is None or t_job.refresh() != "finished":
                    failed.add(job.key)
                    out(f"{prefix}: skipped: its teacher {t_key} has not finished")
                    continue
            eta = _eta([j for j in todo[i - 1:] if j.status != "finished"], ledger, jobs)
            verb = {"resume": "resuming", "conflict": "replacing"}.get(job.status, "training")
            out(f"{prefix}: {verb} ({job.spec.replace(str(REPO) + os.sep, '')}); study {_fmt(time.time() - t_study)}"
                f", ETA {_fmt(eta)}")
            cmd = job.command(sys.executable, force=force and job.status == "conflict")
            log_path = logs / f"{job.run.name}-seed{job.seed}.log"
            entry = ledger.runs.setdefault(job.key, {"attempts": []})
            start = datetime.datetime.now().isoformat(timespec="seconds")
            t0 = time.time()
            with open(log_path, "a") as log:
                log.write(f"=== {start} {' '.join(shlex.quote(x) for x in cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                sig.child = proc
                rc = proc.wait()
                sig.child = None
            wall = time.time() - t0
            entry["attempts"].append({"start": start, "wall_s": round(wall, 3), "rc": rc})
            entry["wall_s"] = round(sum(a["wall_s"] for a in entry["attempts"]), 3)
            entry["rc"] = rc
            entry["device"] = None
            finished = rc == 0 and job.refresh() == "finished"
            ledger.save()
            if sig.signum:
                return 128 + sig.signum
            rest = [j for j in todo[i:] if j.status != "finished"]
            if finished:
                acc = (job.summary() or {}).get("test_accuracy", float("nan"))
                out(f"{prefix}: done in {_fmt(wall)}, test {acc:.4f}; study {_fmt(time.time() - t_study)}, "
                    f"ETA {_fmt(_eta(rest, ledger, jobs))}")
            else:
                failed.add(job.key)
                out(f"{prefix}: FAILED (exit {rc}) after {_fmt(wall)}: {_tail(log_path)} (log: {log_path})")
    finally:
        sig.restore()
    return 0


def _list_suites(out: Callable[[str], None]) -> None:
    for s in SUITES.values():
        ts = "a teacher per seed" if not s.teacher_seeds else f"teacher seeds {s.teacher_seeds}"
        out(f"{s.name} ({s.seeds} seeds by default, {ts}): {s.description}")
        for r in s.runs:
            extra = "".join([f", twin {r.twin}" if r.twin else "", f", teacher {r.teacher}" if r.teacher else "",
                             f", original {r.original:.2f} %" if r.original is not None else ""])
            out(f"    {r.name:<14} {r.role:<9} {r.preset}{extra}")


def main(argv=None) -> int:
    from jaxkd.config import ArgumentParser  # (usage errors: one `error:` line, exit 2)
    p = ArgumentParser(prog="python -m jaxkd.study", description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", nargs="?", help=f"one of {', '.join(SUITES)}, or path/to/suites.py:NAME")
    p.add_argument("--workdir", help="the study's directory: DIR/<run>/seed<k>/ per run, results beside")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the suite's)")
    p.add_argument("--smoke", action="store_true", help="each preset's :smoke variant (seconds, tiny data)")
    p.add_argument("--only", help="RUN,... to train (their teachers too); results cover the whole suite")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config override for every run, after the suite's (e.g. training.num_epochs=1)")
    p.add_argument("--teacher-seeds", type=int, help="train teachers for this many seeds only (student seed k "
                   "uses teacher seed k mod M); default: the suite's")
    p.add_argument("--force", action="store_true", help="train again runs whose workdir holds another config "
                   "(the trainer moves the old run into replaced-<time>/)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and their commands, run nothing")
    p.add_argument("--report-only", action="store_true", help="only rewrite the results from what is on disk")
    p.add_argument("--no-analysis", action="store_true", help="skip the suite's `python -m jaxkd.analyze` step")
    p.add_argument("--list", action="store_true", help="list the suites and their runs")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        _list_suites(print)
        return 0
    if not args.suite:
        raise StudyError(f"give a suite ({', '.join(SUITES)}), e.g. python -m jaxkd.study quickstart --workdir "
                         "studies/quickstart --smoke")
    suite = get_suite(args.suite)
    if not args.workdir:
        raise StudyError("--workdir DIR is required: the study's runs and results go there")
    from jaxkd import paths

    paths.output_dir(args.workdir, "--workdir")
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    if args.only is not None and not only:
        raise StudyError("--only needs RUN[,RUN...]")
    command = "python -m jaxkd.study " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    seeds = suite.seeds if args.seeds is None else args.seeds
    return run_study(suite, Path(args.workdir), seeds=seeds,
                     smoke=args.smoke, only=only, sets=args.set, teacher_seeds=args.teacher_seeds, force=args.force,
                     dry_run=args.dry_run, report_only=args.report_only, analysis=not args.no_analysis,
                     command=command,
                     out=lambda m: print(m, flush=True))

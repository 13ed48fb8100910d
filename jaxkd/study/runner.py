"""`python -m jaxkd.study SUITE --workdir DIR [--seeds N] [--jobs N] [--smoke] [--only RUN,...] [--set KEY=VALUE ...]`

Runs a suite's jobs, each an ordinary `python -m jaxkd.train` in a subprocess, one after another or `--jobs N` at
once (each pinned to its share of the CPU cores; a student starts once its teacher has finished). A crash of one run
does not end the study; its dependants are skipped, the rest go on, then writes DIR/results.json, DIR/RESULTS.md
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
    """SIGINT / SIGTERM: remembered and passed on to the running trainers, which save a checkpoint and exit."""

    def __init__(self):
        self.signum, self.children, self._old = 0, [], {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        self.signum = signum
        for child in self.children:
            if child.poll() is None:
                try:
                    child.send_signal(signum)
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
              analysis: bool = True, command: str | None = None, parallel: int = 1,
              out: Callable[[str], None] = print) -> int:
    """Plans, runs and reports a suite; returns the exit code (0, 1 when a run failed, 128+signal if stopped).
    `parallel` runs train at once (`--jobs`), each pinned to its share of the CPUs."""
    if parallel < 1:
        raise StudyError(f"--jobs must be at least 1, got {parallel}")
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
        t0, ran = time.time(), any(j.status != "finished" for j in todo)  # (statuses change as runs finish)
        code = _execute(todo, jobs, ledger, workdir, env, force, out, failed, parallel)
        if ran:  # the study's own clock
            ledger.data["elapsed_s"] = round(ledger.data.get("elapsed_s", 0.0) + time.time() - t0, 3)
            ledger.data["parallel"] = parallel
            ledger.save()
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
            "command": command, "generated": datetime.datetime.now().isoformat(timespec="seconds"),
            "elapsed_s": ledger.data.get("elapsed_s"), "parallel": ledger.data.get("parallel", 1)}
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


def cpu_groups(jobs: int) -> list[set[int] | None]:
    """The CPUs of this process split into `jobs` disjoint groups (one per concurrent run), or [None] * jobs where
    affinity is not available (macOS) or there are fewer CPUs than runs."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [None] * jobs
    if jobs <= 1 or len(cpus) < jobs:
        return [None] * jobs
    size, extra = divmod(len(cpus), jobs)
    groups, start = [], 0
    for i in range(jobs):
        n = size + (1 if i < extra else 0)
        groups.append(set(cpus[start:start + n]))
        start += n
    return groups


def _slot_env(env: dict, jobs: int) -> dict:
    """A concurrent run's environment: with several at once on one accelerator, each may take its share of its
    memory (XLA preallocates 75 % by default); a fraction the user set is kept."""
    if jobs <= 1 or "XLA_PYTHON_CLIENT_MEM_FRACTION" in env:
        return env
    return dict(env, XLA_PYTHON_CLIENT_MEM_FRACTION=f"{0.9 / jobs:.3f}")


class _Running:
    """One training subprocess of the study: its job, process, log, start time and CPU slot."""

    def __init__(self, job: Job, prefix: str, proc: subprocess.Popen, log, log_path: Path, start: str, slot: int):
        self.job, self.prefix, self.proc, self.log, self.start, self.slot = job, prefix, proc, log, start, slot
        self.log_path = log_path
        self.t0 = time.time()


def _execute(todo: list[Job], jobs: list[Job], ledger: Ledger, workdir: Path, env: dict, force: bool,
             out: Callable[[str], None], failed: set[str], parallel: int = 1) -> int:
    """Runs the unfinished jobs of `todo`, up to `parallel` at once (each pinned to its own share of the CPUs), a
    job only once its teacher has finished. Returns 0, or 128 + signal when stopped."""
    n = len(todo)
    done_before = sum(j.status == "finished" for j in todo)
    at_once = f", {parallel} at a time" if parallel > 1 else ""
    out(f"study: {n} runs in {workdir}{at_once}" + (f", {done_before} finished earlier (skipped)" if done_before
                                                   else ""))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sig = _Signals()
    t_study = time.time()
    by_key = {j.key: j for j in jobs}
    index = {j.key: i for i, j in enumerate(todo, 1)}
    pending: list[Job] = []
    for job in todo:
        if job.status == "finished":
            s = job.summary() or {}
            out(f"[{index[job.key]}/{n}] {job.key}: finished earlier (test "
                f"{s.get('test_accuracy', float('nan')):.4f}), skipped")
        else:
            pending.append(job)
    groups = cpu_groups(parallel)
    free = list(range(parallel))
    running: list[_Running] = []

    def eta() -> float | None:
        left = _eta(pending, ledger, jobs)
        now = time.time()
        for r in running:
            est = _estimate(r.job, ledger, jobs)
            if est is None or left is None:
                return None
            left += max(0.0, est - (now - r.t0))
        return left / max(1, min(parallel, len(pending) + len(running))) if left is not None else None

    def teacher_state(job: Job) -> str:
        """'ready', 'wait' (its teacher is still to run or running) or 'failed'."""
        if not job.teacher:
            return "ready"
        t_key = f"{job.teacher[0]}/seed{job.teacher[1]}"
        t_job = by_key.get(t_key)
        if t_key in failed or t_job is None:
            return "failed"
        if any(r.job.key == t_key for r in running) or any(p.key == t_key for p in pending):
            return "wait"
        return "ready" if t_job.refresh() == "finished" else "failed"

    def start(job: Job) -> None:
        slot = free.pop(0)
        prefix = f"[{index[job.key]}/{n}] {job.key}"
        verb = {"resume": "resuming", "conflict": "replacing"}.get(job.status, "training")
        cpus = groups[slot]
        where = f" on CPUs {','.join(map(str, sorted(cpus)))}" if cpus is not None else ""
        out(f"{prefix}: {verb} ({job.spec.replace(str(REPO) + os.sep, '')}){where}; study "
            f"{_fmt(time.time() - t_study)}, ETA {_fmt(eta())}")
        cmd = job.command(sys.executable, force=force and job.status == "conflict")
        log_path = logs / f"{job.run.name}-seed{job.seed}.log"
        log = open(log_path, "a")
        started = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"=== {started} {' '.join(shlex.quote(x) for x in cmd)}\n")
        log.flush()
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_slot_env(env, parallel),
                                preexec_fn=pin)
        running.append(_Running(job, prefix, proc, log, log_path, started, slot))
        sig.children.append(proc)

    def finish(r: _Running, rc: int) -> None:
        r.log.close()
        running.remove(r)
        sig.children.remove(r.proc)
        free.append(r.slot)
        free.sort()
        wall = time.time() - r.t0
        entry = ledger.runs.setdefault(r.job.key, {"attempts": []})
        entry["attempts"].append({"start": r.start, "wall_s": round(wall, 3), "rc": rc})
        entry["wall_s"] = round(sum(a["wall_s"] for a in entry["attempts"]), 3)
        entry["rc"] = rc
        entry["device"] = None
        finished = rc == 0 and r.job.refresh() == "finished"
        ledger.save()
        if sig.signum:
            return
        if finished:
            acc = (r.job.summary() or {}).get("test_accuracy", float("nan"))
            out(f"{r.prefix}: done in {_fmt(wall)}, test {acc:.4f}; study {_fmt(time.time() - t_study)}, "
                f"ETA {_fmt(eta())}")
        else:
            failed.add(r.job.key)
            out(f"{r.prefix}: FAILED (exit {rc}) after {_fmt(wall)}: {_tail(r.log_path)} (log: {r.log_path})")

    try:
        while pending or running:
            if not sig.signum:
                for job in list(pending):
                    if not free:
                        break
                    state = teacher_state(job)
                    if state == "wait":
                        continue
                    pending.remove(job)
                    if state == "failed":
                        failed.add(job.key)
                        out(f"[{index[job.key]}/{n}] {job.key}: skipped: its teacher "
                            f"{job.teacher[0]}/seed{job.teacher[1]} has not finished")
                        continue
                    start(job)
            if not running:
                if sig.signum or not pending:
                    break
                raise StudyError(f"{len(pending)} runs wait on teachers that will not run: "  # a planning defect
                                 + ", ".join(j.key for j in pending))
            time.sleep(0.2)
            for r in list(running):
                rc = r.proc.poll()
                if rc is not None:
                    finish(r, rc)
    finally:
        for r in list(running):  # only on an exception here: the runs are stopped, not orphaned
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
                r.proc.wait()
            r.log.close()
        sig.restore()
    return 128 + sig.signum if sig.signum else 0


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
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1); on CPU each gets its "
                   "own share of the cores (a small model trains faster on one core beside another run than on two "
                   "cores alone), on one GPU its share of the memory; a student waits for its teacher")
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
                     command=command, parallel=args.jobs,
                     out=lambda m: print(m, flush=True))

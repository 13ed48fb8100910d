"""`python -m jaxkd.faults --workdir DIR [--kills N] [--processes 1|2] [--seed S] [--out FILE.md]`

A fault campaign: a small run (the quickstart AdaptiveCNN with BatchNorm and SWA, 4 epochs x 4 steps, a checkpoint
every epoch) is killed with SIGKILL at N moments drawn from the seed, and run again with the same command each time;
every resumed run must end with the uninterrupted run's parameters, bit for bit (``params_sha256`` and
``swa_params_sha256``).

The moments cycle through the phases a run goes through (``status.json``, written by the trainer at each change):
training steps, validation, checkpoint saves (Orbax writes asynchronously, so a kill there often lands mid-write:
the table says when a ``*.orbax-checkpoint-tmp`` folder existed), the SWA BatchNorm recompute, the final evaluation
and the export. Within a phase, the occurrence (which epoch) and the delay into it are drawn from the seed, scaled by
that occurrence's duration in the uninterrupted run. With ``--processes 2`` the run has two processes (localhost,
jax.distributed) and one of them, drawn, is killed: the other must stop by itself (its collective loses its peer),
and both are run again.

Writes ``DIR/faults.md`` (or ``--out``) and ``DIR/faults.json``: one row per kill (target, phase and step observed
at the kill, how the run ended, where the rerun resumed, outcome). Exit code 0 when every kill was survived.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "RUN_ARGS", "PHASES"]

RUN_ARGS = ["--config", "configs/quickstart.py", "--config.training.num_epochs=4",
            "--config.training.max_steps_per_epoch=4", "--config.training.warmup_epochs=1",
            "--config.training.use_swa=true", "--config.training.swa_start_epoch=0.5",
            "--config.logging.save_frequency=1", "--config.training.log_every_steps=1",
            "--config.logging.progress_bar=false"]
PHASES = ("train", "evaluate", "checkpoint", "swa_bn", "final_evaluate", "export")
STEP_SLEEP_S = "0.15"  # slows each training step (the trainer's on_step hook), so that steps are windows to kill in
ROOT = Path(__file__).resolve().parents[1]


# `python -c _SLOWED_TRAIN SECONDS TRAIN_ARGS...`: jaxkd.train whose every step takes SECONDS longer
_SLOWED_TRAIN = ("import sys, time; from jaxkd import config; from jaxkd.train import loop; s = float(sys.argv[1]); "
                 "config.main_guard(lambda: loop.main(sys.argv[2:], on_step=lambda step: time.sleep(s)))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir: Path, processes: int, log: Path) -> list[subprocess.Popen]:
    env = dict(os.environ)
    port = _free_port()
    procs = []
    for pid in range(processes):
        if processes > 1:
            env = dict(env, JAXKD_COORDINATOR=f"127.0.0.1:{port}", JAXKD_NUM_PROCESSES=str(processes),
                       JAXKD_PROCESS_ID=str(pid))
        out = open(log.with_name(f"{log.name}.p{pid}"), "a")  # noqa: SIM115  (closed by the OS at exit)
        procs.append(subprocess.Popen([sys.executable, "-c", _SLOWED_TRAIN, STEP_SLEEP_S, *RUN_ARGS, "--workdir",
                                       str(workdir)],
                                      cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _wait_all(procs, timeout: float) -> list[int | None]:
    t0 = time.time()
    for p in procs:
        try:
            p.wait(timeout=max(1.0, timeout - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            pass
    return [p.poll() for p in procs]


def _status(workdir: Path) -> tuple[str, int] | None:
    try:
        s = json.loads((workdir / "status.json").read_text())
        return s["phase"], int(s["step"])
    except (OSError, ValueError, KeyError):
        return None


def _writing(workdir: Path) -> bool:
    return any(workdir.glob("checkpoints*/*.orbax-checkpoint-tmp*")) or any(workdir.glob("*.orbax-checkpoint-tmp*"))


def _shas(workdir: Path) -> tuple[str, str] | None:
    try:
        s = json.loads((workdir / "summary.json").read_text())
        return s["params_sha256"], s.get("swa_params_sha256")
    except (OSError, ValueError, KeyError):
        return None


def _finish(workdir: Path, processes: int, log: Path) -> tuple[list[int | None], str]:
    """Runs the same command to the end; returns the exit codes and where it resumed from."""
    codes = _wait_all(_start(workdir, processes, log), timeout=600)
    text = log.with_name(f"{log.name}.p0").read_text(errors="replace")
    resumed = [ln for ln in text.splitlines() if ln.startswith("resuming from step")]
    return codes, (resumed[-1].split()[3] if resumed else "start")


def reference(workdir: Path, processes: int) -> tuple[tuple, list[tuple[str, int, float]]]:
    """The uninterrupted run: its hashes and its trace of (phase, step, seconds since start) transitions."""
    log = workdir.parent / "logs" / workdir.name
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    procs = _start(workdir, processes, log)
    trace, last = [], None
    while any(p.poll() is None for p in procs):
        s = _status(workdir)
        if s is not None and s != last:
            trace.append((*s, time.time() - t0))
            last = s
        time.sleep(0.001)
    if any(p.returncode for p in procs) or _shas(workdir) is None:
        raise RuntimeError(f"the uninterrupted run failed; see {log}.p0")
    return _shas(workdir), trace


def draw(rng: np.random.Generator, trace, i: int, processes: int, phases=PHASES) -> dict:
    """The i-th kill: a phase (cycling through `phases`), an occurrence of it in the reference trace and a delay
    into it."""
    phase = phases[i % len(phases)]
    spans = [(p, step, t1 - t0) for (p, step, t0), (_, _, t1) in zip(trace, trace[1:]) if p == phase]
    if not spans:
        raise RuntimeError(f"phase {phase!r} never occurred in the uninterrupted run")
    _, step, span = spans[int(rng.integers(len(spans)))]
    return {"phase": phase, "step": step, "delay_s": float(rng.uniform(0, span)),
            "victim": int(rng.integers(processes))}


def trial(workdir: Path, processes: int, kill: dict, ref_shas: tuple) -> dict:
    log = workdir.parent / "logs" / workdir.name
    log.parent.mkdir(parents=True, exist_ok=True)
    procs = _start(workdir, processes, log)
    row = dict(kill)
    t0 = time.time()
    target, order = (kill["phase"], kill["step"]), {p: i for i, p in enumerate(("setup",) + PHASES + ("report",
                                                                                                       "done"))}
    while True:  # until the target (or, if polling missed it, anything after it) is under way
        s = _status(workdir)
        if s is not None and (s == target or s[1] > target[1] or (s[1] == target[1] and
                                                                  order[s[0]] > order[target[0]])):
            break
        if all(p.poll() is not None for p in procs) or time.time() - t0 > 600:
            row.update(outcome="missed", note="the run ended before the kill point")
            return row
        time.sleep(0.001)
    time.sleep(kill["delay_s"])
    observed = _status(workdir)
    row["observed"] = f"{observed[0]}@{observed[1]}" if observed else "?"
    row["mid_write"] = _writing(workdir)
    victim = procs[kill["victim"]]
    if victim.poll() is not None:
        row.update(outcome="missed", note="the run had ended")
        return row
    victim.send_signal(signal.SIGKILL)
    t_kill = time.time()
    codes = _wait_all(procs, timeout=180)
    row["peers_stopped_s"] = round(time.time() - t_kill, 1)
    if any(c is None for c in codes):
        for p in procs:
            p.kill()
        row.update(outcome="HUNG", note="a process did not stop within 180 s of its peer's death")
        return row
    codes, resumed = _finish(workdir, processes, log)
    row["resumed_from"] = resumed
    shas = _shas(workdir)
    if any(codes) or shas is None:
        row.update(outcome="FAILED", note=f"rerun exit codes {codes}; see {log}.p0")
    elif shas != tuple(ref_shas):
        row.update(outcome="MISMATCH", note="params_sha256 / swa_params_sha256 differ from the uninterrupted run")
    else:
        row.update(outcome="ok", note="")
    return row


def _table(rows: list[dict], processes: int) -> str:
    head = ["#", "target", "delay", "observed at the kill", "mid-write", "killed"] + \
        (["peer stopped after"] if processes > 1 else []) + ["resumed from", "outcome"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [str(i), f"{r['phase']}@{r['step']}", f"{r['delay_s'] * 1000:.0f} ms", r.get("observed", "–"),
                 "yes" if r.get("mid_write") else "no", f"process {r['victim']}" if processes > 1 else "the run"]
        if processes > 1:
            cells.append(f"{r['peers_stopped_s']} s" if "peers_stopped_s" in r else "–")
        cells += [str(r.get("resumed_from", "–")), r["outcome"] + (f" ({r['note']})" if r.get("note") else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from jaxkd.config import ArgumentParser  # (usage errors: one `error:` line, exit 2)
    ap = ArgumentParser(prog="python -m jaxkd.faults", description=__doc__.split("\n\n")[1])
    ap.add_argument("--workdir", required=True, help="the campaign's folder (a run folder per kill inside)")
    ap.add_argument("--kills", type=int, default=20, help="number of kills (default 20)")
    ap.add_argument("--processes", type=int, default=1, choices=(1, 2), help="processes per run (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"the phases to cycle through (default all: {','.join(PHASES)})")
    ap.add_argument("--out", help="the Markdown table (default WORKDIR/faults.md)")
    args = ap.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = sorted(set(phases) - set(PHASES))
    from jaxkd.config import ConfigError

    if unknown or not phases:
        raise ConfigError(f"--phases {args.phases!r}: unknown phase(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {','.join(PHASES)}")
    if args.kills < 1:
        raise ConfigError(f"--kills {args.kills}: give at least 1")
    from jaxkd import paths

    base = paths.output_dir(args.workdir, "--workdir").resolve()
    if args.out:
        paths.output_file(args.out, "--out")
    if base.exists() and any(base.iterdir()):
        raise ConfigError(f"--workdir {base} is not empty: give a new folder (each campaign starts its runs afresh)")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"uninterrupted run ({args.processes} process{'es' if args.processes > 1 else ''}) ...", flush=True)
    ref_shas, trace = reference(base / "reference", args.processes)
    print(f"  done in {time.time() - t0:.0f} s: {len(trace)} phase changes", flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.kills):
        kill = draw(rng, trace, i, args.processes, phases)
        t = time.time()
        row = trial(base / f"kill{i:02d}", args.processes, kill, ref_shas)
        row["wall_s"] = round(time.time() - t, 1)
        rows.append(row)
        done = time.time() - t0
        eta = (time.time() - t0) / (i + 1) * (args.kills - i - 1)
        print(f"[{i + 1}/{args.kills}] {kill['phase']}@{kill['step']} +{kill['delay_s'] * 1000:.0f} ms -> observed "
              f"{row.get('observed', '–')}{' mid-write' if row.get('mid_write') else ''}: {row['outcome']} "
              f"({row['wall_s']} s; {done:.0f} s so far, ETA {eta:.0f} s)", flush=True)
    killed = [r for r in rows if r["outcome"] != "missed"]
    survived = sum(r["outcome"] == "ok" for r in killed)
    title = (f"# Fault campaign: {survived} of {len(killed)} kills survived ({args.processes} process"
             f"{'es' if args.processes > 1 else ''}, seed {args.seed})")
    text = (f"{title}\n\n`python -m jaxkd.faults --workdir {args.workdir} --kills {args.kills} --processes "
            f"{args.processes} --seed {args.seed} --phases {','.join(phases)}` ({time.time() - t0:.0f} s). "
            f"Run: `{' '.join(RUN_ARGS)}` with "
            f"steps slowed by {STEP_SLEEP_S} s; 'ok' = the rerun's params_sha256 and swa_params_sha256 equal the "
            f"uninterrupted run's.\n\n{_table(rows, args.processes)}\n")
    out = Path(args.out) if args.out else base / "faults.md"
    out.write_text(text)
    (base / "faults.json").write_text(json.dumps({"processes": args.processes, "seed": args.seed, "kills": rows,
                                                  "survived": survived, "killed": len(killed)}, indent=2) + "\n")
    print(text)
    return 0 if survived == len(killed) and killed else 1


if __name__ == "__main__":
    from jaxkd import config as config_lib

    config_lib.main_guard(lambda: main(sys.argv[1:]))

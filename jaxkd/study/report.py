"""What a study leaves in its directory: results.json (for machines), RESULTS.md (for people), results.png.

Accuracies are fractions in results.json (as the trainer's summary.json) and percent in RESULTS.md and the PNG;
paired differences are distilled minus twin, same seed, in the same units.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from jaxkd.study import stats
from jaxkd.study.plan import Job
from jaxkd.study.suites import Suite
from jaxkd.train.reporting import write_json_atomic

__all__ = ["collect", "write_all", "images_per_s"]


def images_per_s(workdir: Path) -> float | None:
    """Median of the train rows' images/s in metrics.jsonl (the first interval, which compiles, is an outlier)."""
    vals = []
    try:
        for line in (workdir / "metrics.jsonl").read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("kind") == "train" and isinstance(row.get("images_per_s"), (int, float)):
                vals.append(float(row["images_per_s"]))
    except OSError:
        return None
    return statistics.median(vals) if vals else None


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _seed_record(job: Job, ledger: dict) -> dict | None:
    summary = job.summary() if job.refresh() == "finished" else None
    if summary is None:
        return None
    entry = ledger.get(job.key, {})
    return {"test_accuracy": float(summary["test_accuracy"]),
            "wall_s": entry.get("wall_s", summary.get("wall_s")),
            "trainer_wall_s": summary.get("wall_s"),
            "images_per_s": images_per_s(job.workdir),
            "config_sha256": _sha256(job.workdir / "config.json"),
            "device": summary.get("device_kind") or summary.get("device") or entry.get("device"),
            "steps": summary.get("steps")}


def _mean_or_none(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return stats.mean(xs)


def collect(suite: Suite, jobs: Sequence[Job], ledger: dict, meta: dict) -> dict:
    """results.json's object from the jobs' workdirs and the study's ledger."""
    recs = {(j.run.name, j.seed): _seed_record(j, ledger) for j in jobs}
    by_run: dict[str, list[Job]] = {}
    for j in jobs:
        by_run.setdefault(j.run.name, []).append(j)
    runs, devices = {}, []
    for run in suite.runs:
        rjobs = by_run.get(run.name, [])
        done = {j.seed: recs[(run.name, j.seed)] for j in rjobs if recs[(run.name, j.seed)]}
        acc = {s: r["test_accuracy"] for s, r in sorted(done.items())}
        failed = sorted(j.seed for j in rjobs
                        if ledger.get(j.key, {}).get("rc") not in (None, 0) and j.seed not in done)
        status = ("finished" if done and len(done) == len(rjobs) else "partial" if done
                  else "failed" if failed else "not run")
        entry = {
            "role": run.role, "twin": run.twin, "teacher": run.teacher, "preset": rjobs[0].spec if rjobs else None,
            "original": None if run.original is None else run.original / 100.0, "note": run.note or None,
            "status": status, "failed_seeds": failed,
            "test_accuracy": {"mean": stats.mean(list(acc.values())), "std": stats.sample_std(list(acc.values())),
                              "n": len(acc), "per_seed": {str(s): v for s, v in acc.items()}},
            "wall_s": _mean_or_none([r["wall_s"] for r in done.values()]),
            "wall_s_total": sum(r["wall_s"] or 0.0 for r in done.values()) if done else None,
            "images_per_s": _mean_or_none([r["images_per_s"] for r in done.values()]),
            "config_sha256": {str(s): r["config_sha256"] for s, r in sorted(done.items())},
            "device": None, "teacher_accuracy": None, "teacher_seeds": None, "delta": None,
        }
        devs = sorted({r["device"] for r in done.values() if r["device"]})
        entry["device"] = " / ".join(devs) or None
        devices += devs
        if run.teacher:
            t_seeds = {str(j.seed): j.teacher[1] for j in rjobs}
            t_rec = {ts: recs.get((run.teacher, ts)) for ts in sorted(set(t_seeds.values()))}
            t_acc = {ts: r["test_accuracy"] for ts, r in t_rec.items() if r}  # over the teacher seeds used
            entry["teacher_seeds"] = t_seeds
            entry["teacher_accuracy"] = {"mean": stats.mean(list(t_acc.values())),
                                         "per_seed": {str(ts): a for ts, a in t_acc.items()}}
        if run.role == "distilled":
            twin = {j.seed: recs.get((run.twin, j.seed)) for j in rjobs}
            pairs = [(s, a, twin[s]["test_accuracy"]) for s, a in acc.items() if twin.get(s)]
            d = stats.paired_delta([p[1] for p in pairs], [p[2] for p in pairs])
            d["per_seed"] = {str(s): a - b for s, a, b in pairs}
            entry["delta"] = d
        runs[run.name] = entry
    devs = sorted(set(devices))
    walls = [r["wall_s"] for r in recs.values() if r and isinstance(r["wall_s"], (int, float))]
    return {"suite": suite.name, "description": suite.description, "device": " / ".join(devs) or meta.get("device"),
            "versions": meta.get("versions", {}), "smoke": meta.get("smoke", False), "seeds": meta.get("seeds"),
            "teacher_seeds": meta.get("teacher_seeds"), "units": "fraction (accuracy and delta)",
            "total_wall_s": sum(walls), "elapsed_s": meta.get("elapsed_s"), "parallel": meta.get("parallel", 1),
            "command": meta.get("command"), "generated": meta.get("generated"), "runs": runs}


# ----------------------------------------------------------------------------------------------------------------
# RESULTS.md

def _pct(x, sign=False, digits=2):
    if x is None:
        return "–"
    return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


def _dur(s):
    if s is None:
        return "–"
    s = float(s)
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def markdown(res: dict) -> str:
    v = res["versions"]
    seeds = res.get("seeds")
    ts = res.get("teacher_seeds")
    lines = [f"# Study `{res['suite']}`" + (" (smoke: tiny data, not a measurement)" if res.get("smoke") else ""), "",
             res.get("description", ""), "",
             f"- seeds: {seeds}; teachers: " + ("one per seed" if not ts else f"seeds 0..{ts - 1}, student seed k "
                                                                            f"uses teacher seed k mod {ts}"),
             f"- device: {res['device'] or 'unknown'}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- wall time of the runs: {_dur(res['total_wall_s'])}" + (
                 f"; the study's own clock: {_dur(res['elapsed_s'])}, {res.get('parallel') or 1} run(s) at a time"
                 if res.get("elapsed_s") else ""),
             f"- command: `{res['command']}`" if res.get("command") else "",
             f"- generated: {res.get('generated')}", "",
             "## Test accuracy (%)", "",
             "Mean ± sample std over the seeds (one test-split evaluation per run, at its end); `original` is the "
             "original project's number (SPEC.md §6).", "",
             "| run | role | test accuracy | per seed | original | teacher (its accuracy) | wall time | images/s | "
             "config sha256 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["runs"].items():
        a = r["test_accuracy"]
        if a["n"]:
            acc = _pct(a["mean"]) + (f" ± {_pct(a['std'])}" if a["std"] is not None else "")
        else:
            acc = r["status"]
        if a["n"] and r["status"] != "finished":
            acc += f" ({r['status']})"
        per = ", ".join(f"{_pct(x)}" for x in a["per_seed"].values()) or "–"
        teacher = "–"
        if r["teacher"]:
            ta = r["teacher_accuracy"] or {}
            teacher = f"{r['teacher']} ({_pct(ta.get('mean'))})"
        ips = f"{r['images_per_s']:,.0f}" if r["images_per_s"] is not None else "–"
        shas = " ".join(f"`{h[:8]}`" for h in r["config_sha256"].values() if h) or "–"
        lines.append(f"| {name} | {r['role']} | {acc} | {per} | {_pct(r['original'])} | {teacher} | "
                     f"{_dur(r['wall_s'])} | {ips} | {shas} |")
    dist = {n: r for n, r in res["runs"].items() if r["role"] == "distilled"}
    if dist:
        lines += ["", "## Distillation: paired difference to the undistilled twin (percentage points)", "",
                  "Distilled minus twin, same seed (same data order and number of steps); 95 % t-interval of the "
                  "mean difference (none with one seed).", "",
                  "| run | twin | mean difference | 95 % interval | n | per seed | interval above 0 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in dist.items():
            d = r["delta"] or {}
            ci = d.get("ci95")
            ci_txt = f"[{_pct(ci[0], True)}, {_pct(ci[1], True)}]" if ci else "–"
            per = ", ".join(_pct(x, True) for x in (d.get("per_seed") or {}).values()) or "–"
            above = "–" if not ci else ("yes" if ci[0] > 0 else "no")
            lines.append(f"| {name} | {r['twin']} | {_pct(d.get('mean'), True)} | {ci_txt} | {d.get('n', 0)} | "
                         f"{per} | {above} |")
    lines += ["", "## Runs", "", "| run | preset | note |", "| --- | --- | --- |"]
    for name, r in res["runs"].items():
        preset = r["preset"] or "–"
        try:
            preset = str(Path(preset).relative_to(Path.cwd())) if os.path.isabs(preset.split(":")[0]) else preset
        except ValueError:
            pass
        lines.append(f"| {name} | `{preset}` | {r['note'] or ''} |")
    lines += ["", "Each run's workdir is `<run>/seed<k>/` beside this file (config.json, metrics.jsonl, "
              "summary.json, test_report.txt, ...); the trainers' output is in `logs/`.", ""]
    return "\n".join(x for x in lines if x is not None)


# ----------------------------------------------------------------------------------------------------------------
# results.png

def plot(res: dict, path: Path) -> None:
    from jaxkd.train.reporting import _plt

    plt = _plt()
    names = list(res["runs"])
    dist = [n for n in names if res["runs"][n]["role"] == "distilled"]
    fig, axes = plt.subplots(1, 2 if dist else 1, figsize=(12 if dist else 7, 0.5 * len(names) + 1.8),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 2]} if dist else None)
    ax = axes[0][0]
    colors = {"teacher": "tab:gray", "baseline": "tab:blue", "distilled": "tab:orange"}
    ys = list(range(len(names)))[::-1]
    allv = []
    for y, n in zip(ys, names):
        r = res["runs"][n]
        a = r["test_accuracy"]
        if a["mean"] is not None:
            ax.barh(y, 100 * a["mean"], xerr=None if a["std"] is None else 100 * a["std"], color=colors[r["role"]],
                    alpha=0.6, capsize=3)
            per = [100 * x for x in a["per_seed"].values()]
            ax.plot(per, [y] * len(per), "k.", ms=5)
            allv += per
            label = f"{100 * a['mean']:.2f}" + ("" if a["std"] is None else f" ± {100 * a['std']:.2f}")
            ax.text(100.0, y, f"{label}  ", ha="right", va="center", fontsize=8)
        if r["original"] is not None:
            ax.plot([100 * r["original"]], [y], "rD", ms=6, label="original (SPEC §6)")
            allv.append(100 * r["original"])
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:1], labels[:1], loc="lower right", fontsize=8)
    ax.set_yticks(ys, names)
    if allv:
        lo = min(allv)
        ax.set_xlim(max(0.0, lo - max(2.0, 0.15 * (100 - lo))), 100.0)
    ax.set_xlabel("test accuracy (%) — mean ± std, dots: seeds")
    ax.set_title(f"{res['suite']}" + (" (smoke)" if res.get("smoke") else "") + f" — {res['device'] or ''}",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if dist:
        ax2 = axes[0][1]
        ys2 = list(range(len(dist)))[::-1]
        for y, n in zip(ys2, dist):
            d = res["runs"][n]["delta"] or {}
            if d.get("mean") is None:
                continue
            ci = d.get("ci95")
            err = None if not ci else [[100 * (d["mean"] - ci[0])], [100 * (ci[1] - d["mean"])]]
            ax2.errorbar([100 * d["mean"]], [y], xerr=err, fmt="o", color="tab:orange", capsize=4)
            per = [100 * x for x in d["per_seed"].values()]
            ax2.plot(per, [y] * len(per), "k.", ms=5)
        ax2.axvline(0.0, color="k", lw=0.8)
        ax2.set_yticks(ys2, [f"{n} − {res['runs'][n]['twin']}" for n in dist])
        ax2.set_xlabel("paired difference (pp) — mean, 95 % interval")
        ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_all(res: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "results.json", _finite(res))
    tmp = directory / ".RESULTS.md.tmp"
    tmp.write_text(markdown(res))
    os.replace(tmp, directory / "RESULTS.md")
    plot(res, directory / "results.png")


def _finite(x):
    """NaN/inf as null: results.json stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x

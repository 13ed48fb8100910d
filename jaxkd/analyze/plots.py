"""The analysis figures (LATER.md §4.4-4.5: the original's cka_heatmap, attention_distances, locality_spectrum,
forensics_summary and comparison figures), drawn with matplotlib (Agg) from the per-workdir result dicts.

* ``cka_<name>.png`` per run: its CKA matrices, self and student × teacher, one panel per kernel / estimator, values
  printed in the cells (up to 16 × 16), colour scale 0–1;
* ``cka_comparison.png`` (several runs): the first kernel / estimator's self-CKA of each run in a row (and its
  student × teacher matrix below), titled with the off-diagonal (and teacher) means;
* ``attention_distances.png``: per-layer mean attention distance of every ViT run in one plot, each head a dot, the
  uniform-attention distance of the grid dashed and the collapse threshold dotted;
* ``locality_spectrum.png``: every head's distance sorted ascending, one curve per run;
* ``hessian.png``: the Hutchinson trace of each run as a bar with ±1 standard error, and the top eigenvalues;
* ``forensics_summary.png``: trace bars, spectrum, CLS dispersion and collapsed-head percentages side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxkd.analyze.attention import COLLAPSE_MAD, grid_coordinates, grid_distances

__all__ = ["write_all", "plot_cka", "plot_cka_comparison", "plot_layer_distances", "plot_locality_spectrum",
           "plot_hessian", "plot_forensics_summary"]


def _plt():
    from jaxkd.train.reporting import _plt as plt

    return plt()


def _save(fig, path: Path, tight: bool = True) -> None:
    """Through a temporary file and a rename. ``tight=False``: a figure with a colorbar axis, which tight_layout
    cannot place: cropped at saving instead."""
    plt = _plt()
    if tight:
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches=None if tight else "tight")
    plt.close(fig)
    os.replace(tmp, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _heatmap(ax, m, rows, cols, title):
    m = np.asarray(m, np.float64)
    im = ax.imshow(np.nan_to_num(m, nan=0.0), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if max(m.shape) <= 16:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if np.isfinite(v) and v > 0.6 else "white")
    ax.set_title(title, fontsize=9)
    return im


def _keys(cka: dict) -> list[str]:
    """'kernel/estimator' in the order the settings gave (the first is the one compared across runs)."""
    return [f"{k}/{e}" for k in cka["kernels"] for e in cka["estimators"]]


def plot_cka(run: dict, path: Path) -> None:
    cka = run["cka"]
    keys = _keys(cka)
    teacher = cka.get("teacher")
    rows = 2 if teacher else 1
    plt = _plt()
    fig, axes = plt.subplots(rows, len(keys), figsize=(3.6 * len(keys) + 0.8, 4.0 * rows + 0.4), squeeze=False,
                             gridspec_kw={"hspace": 0.75, "wspace": 0.45})
    im = None
    for j, k in enumerate(keys):
        s = cka["self_summary"][k]
        im = _heatmap(axes[0][j], cka["self"][k], cka["layers"], cka["layers"],
                      f"self, {k}\noff-diagonal mean {s['off_diagonal_mean']:.3f}")
        if teacher:
            t = cka["teacher_summary"][k]
            im = _heatmap(axes[1][j], teacher["matrices"][k], cka["layers"], teacher["layers"],
                          f"× teacher ({teacher['model_type']}), {k}\nmean {t['mean']:.3f}")
            axes[1][j].set_xlabel("teacher layer", fontsize=8)
        axes[0][j].set_xlabel("layer", fontsize=8)
    fig.suptitle(f"CKA: {run['name']} ({run['split']} split, n = {run['num_samples']})", fontsize=10, y=1.03)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02)
    _save(fig, path, tight=False)


def plot_cka_comparison(runs: list[dict], path: Path) -> None:
    with_cka = [r for r in runs if "cka" in r]
    key = _keys(with_cka[0]["cka"])[0]
    teacher_row = any("teacher" in r["cka"] for r in with_cka)
    plt = _plt()
    rows = 2 if teacher_row else 1
    fig, axes = plt.subplots(rows, len(with_cka), figsize=(4.2 * len(with_cka), 3.9 * rows), squeeze=False)
    for j, r in enumerate(with_cka):
        c = r["cka"]
        s = c["self_summary"][key]
        _heatmap(axes[0][j], c["self"][key], c["layers"], c["layers"],
                 f"{r['name']}: self ({key})\ndiag {s['diagonal_mean']:.2f}, off-diag {s['off_diagonal_mean']:.3f}")
        if teacher_row:
            if "teacher" in c:
                t = c["teacher_summary"][key]
                _heatmap(axes[1][j], c["teacher"]["matrices"][key], c["layers"], c["teacher"]["layers"],
                         f"{r['name']} × teacher\nmean {t['mean']:.3f}")
            else:
                axes[1][j].axis("off")
    _save(fig, path)


def _uniform_mad(grid) -> float:
    return float(grid_distances(grid).mean())


def plot_layer_distances(runs: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    grids = set()
    for i, r in enumerate(runs):
        a = r["attention"]
        color = f"C{i}"
        layers = np.arange(len(a["layer_distances"]))
        ax.plot(layers, a["layer_distances"], "o-", color=color, label=f"{r['name']} (mean {a['mean_distance']:.2f})")
        heads = np.asarray(a["head_distances"])
        for h in range(heads.shape[1]):
            ax.plot(layers, heads[:, h], ".", color=color, alpha=0.35, ms=5)
        grids.add(tuple(a["grid"]))
    for g in sorted(grids):
        ax.axhline(_uniform_mad(g), ls="--", color="gray", lw=1)
        ax.text(0, _uniform_mad(g), f" uniform attention, {g[0]}×{g[1]} grid", va="bottom", fontsize=7, color="gray")
    ax.axhline(COLLAPSE_MAD, ls=":", color="red", lw=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer (block)")
    ax.set_xticks(range(max(len(r["attention"]["layer_distances"]) for r in runs)))
    ax.set_ylabel("mean attention distance (patches)")
    ax.set_title("mean attention distance per layer (dots: heads; dashed: uniform attention; dotted: collapse "
                 "threshold)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_locality_spectrum(runs: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, r in enumerate(runs):
        mad = np.sort(np.asarray(r["attention"]["head_distances"]).ravel())
        ax.plot(np.arange(1, len(mad) + 1), mad, "o-", ms=3, color=f"C{i}", label=r["name"])
    ax.axhline(COLLAPSE_MAD, ls=":", color="red", lw=1, label=f"collapse threshold ({COLLAPSE_MAD})")
    ax.set_xlabel("head (sorted by distance)")
    ax.set_ylabel("mean attention distance (patches)")
    ax.set_ylim(bottom=0)
    ax.set_title("locality spectrum: every head's mean attention distance, ascending", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _trace_bars(ax, runs):
    names = [r["name"] for r in runs]
    vals = [r["hessian"]["trace"]["trace"] for r in runs]
    errs = [r["hessian"]["trace"]["stderr"] for r in runs]
    ax.bar(range(len(runs)), vals, yerr=errs, capsize=5, color=[f"C{i}" for i in range(len(runs))], alpha=0.7)
    for i, (v, e, r) in enumerate(zip(vals, errs, runs)):
        ax.text(i, v, f"{v:.3g} ± {e:.2g}\n({r['hessian']['trace']['probes']} probes)", ha="center", va="bottom",
                fontsize=7)
    ax.set_xticks(range(len(runs)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("tr(H), Hutchinson ± 1 s.e.")
    ax.set_title("Hessian trace", fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_hessian(runs: list[dict], path: Path) -> None:
    plt = _plt()
    eig = [r for r in runs if "top_eigenvalues" in r["hessian"]]
    fig, axes = plt.subplots(1, 2 if eig else 1, figsize=(11 if eig else 6, 4.3), squeeze=False)
    _trace_bars(axes[0][0], runs)
    if eig:
        ax = axes[0][1]
        for i, r in enumerate(runs):
            if "top_eigenvalues" in r["hessian"]:
                vals = r["hessian"]["top_eigenvalues"]["eigenvalues"]
                ax.plot(np.arange(1, len(vals) + 1), vals, "o-", color=f"C{i}", label=r["name"])
        ax.set_xlabel("rank")
        ax.set_xticks(range(1, 1 + max(len(r["hessian"]["top_eigenvalues"]["eigenvalues"]) for r in eig)))
        ax.set_ylabel("eigenvalue")
        if all(v > 0 for r in eig for v in r["hessian"]["top_eigenvalues"]["eigenvalues"]):
            ax.set_yscale("log")
        ax.set_title("top Hessian eigenvalues (Lanczos)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Hessian of the mean CE over n = {runs[0]['hessian']['num_samples']} "
                 f"{runs[0]['split']} images (eval mode, no smoothing)", fontsize=10)
    _save(fig, path)


def plot_forensics_summary(runs: list[dict], path: Path) -> None:
    """The original's 2×2 forensics figure: trace bars, spectrum, CLS dispersion and collapsed-% bars."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    hess = [r for r in runs if "hessian" in r]
    if hess:
        _trace_bars(axes[0][0], hess)
    else:
        axes[0][0].axis("off")
    heads = [r for r in runs if "heads" in r]
    ax = axes[0][1]
    for i, r in enumerate(runs):
        if "attention" in r:
            mad = np.sort(np.asarray(r["attention"]["head_distances"]).ravel())
            ax.plot(np.arange(1, len(mad) + 1), mad, "o-", ms=3, color=f"C{i}", label=r["name"])
    ax.axhline(COLLAPSE_MAD, ls=":", color="red", lw=1)
    ax.set_ylim(bottom=0)
    ax.set_title("locality spectrum", fontsize=10)
    ax.set_xlabel("head (sorted)")
    ax.set_ylabel("MAD (patches)")
    ax.grid(alpha=0.3)
    x = np.arange(len(heads))
    names = [r["name"] for r in heads]
    disp = [float(np.mean(r["heads"]["per_head"]["cls_dispersion"])) for r in heads]
    axes[1][0].bar(x, disp, color=[f"C{runs.index(r)}" for r in heads], alpha=0.7)
    for i, r in enumerate(heads):  # the dispersion of a CLS query spread evenly over the grid
        c = grid_coordinates(r["heads"]["grid"])
        axes[1][0].plot([i - 0.4, i + 0.4], [c.var(axis=0).sum()] * 2, "k--", lw=1)
    axes[1][0].set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    axes[1][0].set_title("CLS dispersion (mean over heads, patches²; dashed: uniform)", fontsize=10)
    w = 0.38
    for off, key, count, label in ((-w / 2, "collapsed_heads_ratio", "collapsed_heads", f"MAD < {COLLAPSE_MAD}"),
                                   (w / 2, "cls_collapse_ratio", "cls_collapsed_heads", "CLS self-attention > 0.9")):
        vals = [100 * r["heads"].get(key, 0.0) for r in heads]
        axes[1][1].bar(x + off, vals, w, label=label)
        for i, (v, r) in enumerate(zip(vals, heads)):
            axes[1][1].text(i + off, v, f"{r['heads'].get(count, 0)}/{r['heads']['num_heads_total']}", ha="center",
                            va="bottom", fontsize=8)
    axes[1][1].set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    axes[1][1].set_ylabel("% of heads")
    axes[1][1].set_ylim(0, max([5.0] + [100 * r["heads"]["collapsed_heads_ratio"] for r in heads]
                               + [100 * r["heads"].get("cls_collapse_ratio", 0.0) for r in heads]) * 1.15)
    axes[1][1].set_title("collapsed heads", fontsize=10)
    axes[1][1].legend(fontsize=8)
    for a in (axes[1][0], axes[1][1]):
        a.grid(axis="y", alpha=0.3)
    _save(fig, path)


def write_all(runs: dict[str, dict], out: Path) -> list[str]:
    """Every figure the results allow, into `out`; returns their file names."""
    rs = list(runs.values())
    written = []

    def emit(fn, arg, name):
        fn(arg, out / name)
        written.append(name)

    for r in rs:
        if "cka" in r:
            emit(plot_cka, r, f"cka_{_safe(r['name'])}.png")
    if sum("cka" in r for r in rs) > 1:
        emit(plot_cka_comparison, rs, "cka_comparison.png")
    att = [r for r in rs if "attention" in r]
    if att:
        emit(plot_layer_distances, att, "attention_distances.png")
        emit(plot_locality_spectrum, att, "locality_spectrum.png")
    hess = [r for r in rs if "hessian" in r]
    if hess:
        emit(plot_hessian, hess, "hessian.png")
    if any("heads" in r for r in rs) and (att or hess):
        emit(plot_forensics_summary, rs, "forensics_summary.png")
    return written

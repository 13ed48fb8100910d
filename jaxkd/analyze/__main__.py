"""`python -m jaxkd.analyze WORKDIR [WORKDIR ...] [--metrics attention,heads,cka,hessian|all] [--split validation|test]
[--num-samples N] [--names NAME ...] [--out DIR] [--teacher WORKDIR]`

Analyses trained runs on n images (default 256) drawn with --seed from the VALIDATION split (--split test only when
asked): mean attention distance per layer and head and per-head statistics (ViTs), CKA matrices (the model's layers
against each other and against its teacher's: linear and RBF kernels, unbiased and biased HSIC), and the Hessian of
the mean cross-entropy at the trained weights (Hutchinson trace with its standard error, top-k eigenvalues by
Lanczos). Writes OUT/analysis.json and PNG figures (CKA heatmaps, per-layer attention distance, locality spectrum,
Hessian trace and eigenvalues; with several workdirs they are compared side by side). OUT defaults to
WORKDIR/analysis for one workdir; name it with --out for several.

The teacher of a distilled run is the one its config names (distillation / ss_distillation.teacher_checkpoint);
--teacher WORKDIR names another (any jaxkd workdir trained on the same data) for every workdir given.

Runtime, measured on 2 CPU cores: the quickstart pair (configs/quickstart.py's CNN and quickstart_kd.py's DeiT;
their validation split has 180 images) with --metrics all, 3 minutes with the cores nearly idle (the CNN 117 s, its
Hessian 115 s: 100 probes and 26 Lanczos products; the DeiT 51 s), 5 minutes beside other work. The Hessian is
nearly all of it: up to --max-probes + about 5·top-k Hessian-vector products, each a forward and a double backward
pass over the n images; --metrics attention,heads,cka takes seconds once the model and data are loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxkd import config as config_lib

__all__ = ["main"]

_METRICS = ("attention", "heads", "cka", "hessian")


def _metrics(text: str) -> tuple[str, ...]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no metric given: use all or a comma list of " + ", ".join(_METRICS))
    if "all" in names:
        return _METRICS
    bad = [t for t in names if t not in _METRICS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metric {bad[0]!r}: use all or a comma list of "
                                         + ", ".join(_METRICS))
    return tuple(m for m in _METRICS if m in names)


def _choices(allowed: tuple[str, ...], what: str):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in names if t not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {(bad or [text])[0]!r}: use a comma list of "
                                             + ", ".join(allowed))
        return names
    return parse


def _number(kind: type, test, must: str):
    """An argparse type: `kind(text)` that passes `test`, else a one-line error saying it `must` be so."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not test(v):
            raise argparse.ArgumentTypeError(f"{v} must be {must}")
        return v
    return parse


_positive = _number(int, lambda v: v >= 1, "at least 1")
_count = _number(int, lambda v: v >= 0, "0 or more")
_fraction = _number(float, lambda v: v > 0, "positive")


def parser() -> argparse.ArgumentParser:
    p = config_lib.ArgumentParser(prog="python -m jaxkd.analyze", description=__doc__.split("\n\n")[1],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="finished jaxkd runs (students or teachers)")
    p.add_argument("--metrics", type=_metrics, default=_METRICS, help="comma list of attention, heads, cka, hessian, "
                   "or all (default)")
    p.add_argument("--split", default="validation", choices=("validation", "val", "test"),
                   help="the split the images come from (default validation; test only when asked)")
    p.add_argument("--num-samples", type=_positive, default=256, metavar="N",
                   help="images drawn from the split (default 256; all of it when smaller)")
    p.add_argument("--seed", type=_count, default=0, help="draws the images, the probes and Lanczos' start (0)")
    p.add_argument("--names", nargs="+", default=None, help="display names, one per workdir (default: folder names)")
    p.add_argument("--out", default=None, help="output folder (default WORKDIR/analysis for one workdir)")
    p.add_argument("--teacher", default=None, metavar="WORKDIR", help="the teacher for student x teacher CKA "
                   "(default: the one each run's config names)")
    p.add_argument("--chunk-size", type=_positive, default=128, help="images per jitted forward / HVP chunk (128)")
    p.add_argument("--kernels", type=_choices(("linear", "rbf"), "kernel"), default=("linear", "rbf"),
                   help="CKA kernels: linear,rbf (default both; the first is the one compared across runs)")
    p.add_argument("--hsic", type=_choices(("unbiased", "biased"), "HSIC estimator"), default=("unbiased", "biased"),
                   help="HSIC estimators: unbiased,biased (default both; the first is the one compared)")
    p.add_argument("--rbf-sigma", type=_fraction, default=1.0, help="RBF bandwidth: σ² = this² × the median "
                   "squared pairwise distance (1.0)")
    p.add_argument("--top-k", type=_count, default=5, help="Hessian eigenvalues to find (5; 0: none)")
    p.add_argument("--min-probes", type=_positive, default=10, help="Hutchinson probes before the stopping rule may "
                   "stop (10)")
    p.add_argument("--max-probes", type=_positive, default=100, help="Hutchinson probes at most (100)")
    p.add_argument("--trace-rtol", type=_fraction, default=0.05, help="stop once the trace's standard error is "
                   "below this fraction of it (0.05)")
    p.add_argument("--eig-tol", type=_fraction, default=1e-4, help="Lanczos' relative tolerance (1e-4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when stderr "
                   "is not a terminal)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from jaxkd import paths
    from jaxkd.analyze.run import AnalyzeError, Settings, check_workdir, teacher_source

    workdirs = [Path(w) for w in args.workdirs]
    names = args.names if args.names is not None else [w.resolve().name or str(w) for w in workdirs]
    if len(names) != len(workdirs):
        raise AnalyzeError(f"--names gives {len(names)} names for {len(workdirs)} workdirs: give one per workdir")
    if len(set(names)) != len(names):
        raise AnalyzeError(f"the workdirs' names repeat ({', '.join(names)}): give distinct ones with --names")
    if args.min_probes < 2 or args.min_probes > args.max_probes:
        raise AnalyzeError(f"--min-probes {args.min_probes} must be at least 2 and at most --max-probes "
                           f"{args.max_probes}")
    configs = [check_workdir(w) for w in workdirs]
    teacher = Path(args.teacher) if args.teacher is not None else None
    if teacher is not None:
        check_workdir(teacher, "--teacher")
    elif "cka" in args.metrics:
        for w, cfg in zip(workdirs, configs):
            src = teacher_source(cfg)
            if src is not None and not Path(src).exists():
                raise AnalyzeError(f"{w}: its teacher '{src}' (from its config) is not there: pass --teacher WORKDIR, "
                                   "or leave cka out of --metrics")
    if "cka" in args.metrics and args.num_samples < 4:
        raise AnalyzeError(f"--num-samples {args.num_samples}: CKA's unbiased HSIC needs at least 4 images")
    if args.out is None and len(workdirs) > 1:
        raise AnalyzeError("several workdirs: name the folder for their comparison with --out DIR")
    out = paths.output_dir(args.out if args.out is not None else workdirs[0] / "analysis", "--out")
    settings = Settings(metrics=args.metrics, split=args.split if args.split != "val" else "validation",
                        num_samples=args.num_samples, seed=args.seed, chunk_size=args.chunk_size,
                        kernels=args.kernels, estimators=args.hsic, rbf_sigma_frac=args.rbf_sigma, top_k=args.top_k,
                        min_probes=args.min_probes, max_probes=args.max_probes, trace_rtol=args.trace_rtol,
                        eig_tol=args.eig_tol, progress=not args.no_progress)
    from jaxkd.analyze.run import run, summary_lines

    result = run(workdirs, names, out, settings, teacher)
    print("\n".join(summary_lines(result)))
    print(f"analysis written to {out}/analysis.json ({', '.join(result['figures'])})")
    return 0


if __name__ == "__main__":
    config_lib.main_guard(lambda: main(sys.argv[1:]))

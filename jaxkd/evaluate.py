"""`python -m jaxkd.evaluate --workdir DIR [--split test|val|train] [--tta] [--out DIR]`

Evaluates a trained run's exported model on a split of its own dataset: accuracy, top-1/3/5, per-class precision,
recall and F1 with macro averages, and a confusion-matrix PNG. `--tta` averages the logits of each image and its
horizontal flip. Prints the report and writes eval_<split>[_tta].txt / .json / .png to the workdir (or `--out`); a
finished run in a read-only place is evaluated all the same, saying where the files could not go.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxkd import config as config_lib
from jaxkd import paths, tasks
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import reporting, steps

__all__ = ["evaluate", "main"]


def tta_logits(model, image):
    """Mean of the logits of the images and their horizontal flips (B,H,W,C): (B,K)."""
    return (tasks.inference_logits(model, image) + tasks.inference_logits(model, image[:, :, ::-1, :])) / 2


def evaluate(workdir: str | Path, split: str = "test", tta: bool = False, write: bool = True,
             out: str | Path | None = None) -> dict:
    """The report dict of `split` for the model in `workdir` (see jaxkd.train.reporting.classification_report). With
    `write`, prints the report, then writes eval_<split>[_tta].txt / .json / .png into `out` (default: the
    workdir); a place that cannot be written is said on stderr after the report (the report stands)."""
    from jaxkd import data as data_lib
    from jaxkd.train.evaluators import evaluate_split

    workdir = Path(workdir)
    model, cfg = ckpt_lib.load(workdir)
    data = data_lib.DataPipeline.from_config(cfg)
    gd_train, gd_eval, params, rest = steps.split_model(model)
    eval_step = steps.make_eval_step(gd_eval, data.num_classes, tta_logits if tta else tasks.inference_logits)
    res = evaluate_split(eval_step, params, rest, data, split)
    report = reporting.classification_report(res["confusion"], data.class_names)
    report.update({k: res[k] for k in ("top1", "top3", "top5", "loss", "count")})
    if write:
        tag = f"eval_{split}" + ("_tta" if tta else "")
        title = f"{cfg.experiment_name}: {split} split ({res['count']} images){' with flip TTA' if tta else ''}"
        text = reporting.format_report(report, title)
        print(text, flush=True)
        dest = Path(out) if out is not None else workdir
        why = paths.unwritable_reason(dest)
        if why:
            print(f"note: the report was not saved: cannot write to {dest} ({why}); pass --out DIR to save it",
                  file=sys.stderr)
            return report
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{tag}.txt").write_text(text + "\n")
        reporting.write_json_atomic(dest / f"{tag}.json", dict(report, confusion=res["confusion"]))
        reporting.plot_confusion_matrix(res["confusion"], data.class_names, dest / f"{tag}.png", title=title)
    return report


def main(argv=None) -> int:
    parser = config_lib.ArgumentParser(prog="python -m jaxkd.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="test", choices=("test", "val", "train"))
    parser.add_argument("--tta", action="store_true", help="average with the horizontal flip")
    parser.add_argument("--out", default=None, help="folder for the report files (default: the workdir)")
    args = parser.parse_args(argv)
    if args.out is not None:
        paths.output_dir(args.out, "--out")
    evaluate(args.workdir, args.split, args.tta, out=args.out)
    return 0


if __name__ == "__main__":
    config_lib.main_guard(lambda: main(sys.argv[1:]))

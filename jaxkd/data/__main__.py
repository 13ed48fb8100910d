"""``python -m jaxkd.data``: look at the data a config trains on.

    python -m jaxkd.data preview --config configs/vit_cifar.py --out grid.png [--num-images 64] [--epoch 0]
    python -m jaxkd.data info --config configs/quickstart.py
    python -m jaxkd.data export --config configs/cifar_cnn.py --config.data.source=folder:IMAGES --out DIR

``preview`` writes a PNG grid of augmented (and mixed) training images exactly as the pipeline produces them,
un-normalised, each captioned with its target class (when MixUp/CutMix mixed it: the main class, its weight and
the partner class).
``info`` prints the splits, class counts and normalisation. ``export`` decodes the config's ``data.source`` once
(at ``data.image_size``) and writes it as an ``npy:`` folder, which training then memory-maps
(``--config.data.source=npy:DIR``; with ``--config.data.placement=host`` or ``auto`` the images stay on the host and
each process reads only its rows of each batch). All accept ``--config.a.b=value`` overrides.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from jaxkd.data.grid import make_grid


def _pipeline(config, batch_size: int | None = None):
    from ml_collections import ConfigDict

    from jaxkd.data.pipeline import DataPipeline

    if batch_size is not None:
        config = ConfigDict(config.to_dict())
        config.data.batch_size = batch_size
    return DataPipeline.from_config(config)


def _caption(target: np.ndarray, names: Sequence[str]) -> str:
    order = np.argsort(-target)
    if target[order[0]] > 0.99:
        return names[order[0]]
    return f"{names[order[0]][:6]} {target[order[0]]:.2f} {names[order[1]][:6]}"


def preview(config, out: str, num_images: int = 64, epoch: int = 0) -> str:
    """Writes a grid of the first ``num_images`` augmented training images of ``epoch`` to ``out`` (PNG)."""
    import jax

    shards = jax.device_count()
    pipe = _pipeline(config, batch_size=-(-num_images // shards) * shards)
    batch = jax.device_get(next(pipe.train_batches(epoch)))
    mean, std = np.asarray(pipe.mean, np.float32), np.asarray(pipe.std, np.float32)
    images = np.asarray(batch.image)[:num_images] * std + mean
    captions = [_caption(t, pipe.class_names) for t in np.asarray(batch.target)[:num_images]]
    make_grid(images, captions).save(out)
    return out


def info(config) -> str:
    """A few lines describing the splits, classes and normalisation of the config's data."""
    pipe = _pipeline(config)
    d = pipe.dataset
    lines = [f"source: {d.source}  ({d.name}, images {'x'.join(map(str, d.image_shape))} uint8)",
             f"classes ({d.num_classes}): {', '.join(d.class_names)}"]
    for split in ("train", "val", "test"):
        y = pipe.splits[split][1]
        lines.append(f"{split}: {len(y)} examples, per class {np.bincount(y, minlength=d.num_classes).tolist()}")
    lines.append(f"normalisation mean {[round(v, 4) for v in pipe.mean]} std {[round(v, 4) for v in pipe.std]}")
    lines.append(f"batch {pipe.batch_size} on {pipe.num_shards} device(s): {pipe.steps_per_epoch} steps per epoch")
    return "\n".join(lines)


def export(config, out: str) -> str:
    """Writes the config's dataset (``data.source`` at ``data.image_size``) to ``out`` as an ``npy:`` folder."""
    from jaxkd.data.sources import load_arrays, save_npy_dir

    d = config.data
    ds = load_arrays(d.source, data_dir=d.data_dir, image_size=int(d.image_size or 0))
    save_npy_dir(ds, out)
    gib = (ds.x_train.nbytes + ds.x_test.nbytes) / 2**30
    return (f"wrote {out}: {len(ds.y_train)} train + {len(ds.y_test)} test images "
            f"{'x'.join(map(str, ds.image_shape))} uint8 ({gib:.2f} GiB); train on it with "
            f"--config.data.source=npy:{out}")


def main(argv: Sequence[str] | None = None) -> int:
    from jaxkd import paths
    from jaxkd.config import ArgumentParser, ConfigError, add_config_args, parse_config_args
    from jaxkd.data.sources import DataError

    parser = ArgumentParser(prog="python -m jaxkd.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = add_config_args(sub.add_parser("preview", help="write a PNG grid of augmented training images"))
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--num-images", type=int, default=64, help="images in the grid (default 64)")
    p.add_argument("--epoch", type=int, default=0, help="which epoch's first batch (default 0)")
    add_config_args(sub.add_parser("info", help="print splits, class counts and normalisation"))
    p = add_config_args(sub.add_parser("export", help="write the config's data as an npy: folder (memory-mapped)"))
    p.add_argument("--out", required=True, help="output folder")
    try:
        args, config = parse_config_args(parser, argv)
        if args.command == "preview":
            if args.num_images < 1:
                raise DataError("--num-images must be >= 1")
            paths.output_file(args.out, "--out")
            print(f"wrote {preview(config, args.out, args.num_images, args.epoch)}")
        elif args.command == "export":
            print(export(config, paths.output_dir(args.out, "--out")))
        else:
            print(info(config))
    except (ConfigError, DataError, paths.PathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

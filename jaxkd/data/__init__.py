"""jaxkd.data: dataset sources, the on-device batch pipeline, and (in :mod:`jaxkd.data.augment`) augmentations.

Typical use::

    from jaxkd.data import DataPipeline
    pipe = DataPipeline.from_config(config)            # loads config.data.source, splits off validation
    # (or DataPipeline(dataset, DataSpec.from_config(config.data), seed=...) for data already in memory)
    for batch in pipe.train_batches(epoch):            # Batch(image, label, target, teacher_image, mask)
        ...
    for batch in pipe.eval_batches("val"):             # every example once; mask marks the padding
        ...

``python -m jaxkd.data preview --config PRESET --out grid.png`` writes a grid of augmented training images.
Importing this package imports neither TensorFlow-Datasets nor the augmentations (they load on first use).
"""

from jaxkd.data.pipeline import (
    FROM_CONFIG,
    SPEC_NORMALIZATION,
    Batch,
    DataPipeline,
    cap_examples,
    epoch_permutation,
    make_data_mesh,
    normalization_stats,
    process_local_rows,
    split_validation,
)
from jaxkd.data.sources import LOCAL_ALTERNATIVES, DataError, Dataset, load_arrays, resize_images, validate
from jaxkd.data.spec import AugmentSpec, DataSpec, MixSpec

_AUGMENT_NAMES = ("make_train_transform", "make_eval_transform", "make_mix")

__all__ = [
    "AugmentSpec", "Batch", "DataError", "DataPipeline", "DataSpec", "Dataset", "FROM_CONFIG", "LOCAL_ALTERNATIVES",
    "MixSpec", "SPEC_NORMALIZATION", "cap_examples", "epoch_permutation", "load_arrays", "make_data_mesh",
    "normalization_stats", "process_local_rows", "resize_images", "split_validation", "validate", *_AUGMENT_NAMES,
]


def __getattr__(name: str):
    """The augmentation constructors, re-exported lazily from :mod:`jaxkd.data.augment`."""
    if name in _AUGMENT_NAMES:
        from jaxkd.data import augment

        return getattr(augment, name)
    raise AttributeError(f"module 'jaxkd.data' has no attribute {name!r}")

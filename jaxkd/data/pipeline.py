"""The batch pipeline: uint8 data on the accelerator (or the host), per-epoch permutation, jit-compiled augmentation.

Placement ``device`` (the default when it fits): the whole dataset lives on the device mesh as uint8 (replicated
over the mesh). Each step the host cuts the next ``batch_size`` indices from the epoch's permutation
(:func:`epoch_permutation`, a function of (seed, epoch)), each process hands only its shard of them to
``jax.make_array_from_process_local_data``, and ONE jitted function gathers the images, augments them per sample
(``jaxkd.data.augment``), mixes them (MixUp/CutMix) and returns a :class:`Batch` sharded over the mesh's ``data``
axis. The host never touches pixels, and because jit dispatch is asynchronous the next batch is prepared while the
previous training step runs.

Placement ``host`` (data larger than the device's memory): the images stay in host memory — memory-mapped when the
source is (``npy:DIR``) — and each process reads only the rows of ITS shard of each global batch, one batch ahead on
a background thread, and puts them on its devices; the same jitted augmentation then runs on the device. Both
placements produce bit-identical batches for the same seed (tested). ``data.placement = 'auto'`` picks ``host``
when the uint8 splits would take more than a quarter of the free memory of a local device, or when the source is
memory-mapped and the device reports no memory statistics (CPU: its "device" memory is the host's RAM).

Determinism: the permutation depends on (seed, epoch) and the augmentation key on (seed, epoch, step), so
``train_batches(epoch, start_step=k)`` yields exactly the batches k, k+1, ... of an uninterrupted epoch (resume),
and the batches do not depend on the number of devices (threefry keys are partitionable).

Training drops the last partial batch (``steps_per_epoch = n_train // batch_size``; every example still appears
in some epoch because each epoch has a new permutation). Evaluation covers every example: the last batch is
padded to the full batch size with ``mask`` False on the padding, so one compiled shape serves every batch.
"""

from __future__ import annotations

import concurrent.futures
import mmap
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkd.data.sources import DataError, Dataset, load_arrays
from jaxkd.data.spec import DataSpec

__all__ = ["Batch", "DataPipeline", "FROM_CONFIG", "SPEC_NORMALIZATION", "make_data_mesh", "split_validation",
           "cap_examples", "normalization_stats", "epoch_permutation", "process_local_rows", "PLACEMENTS", "HostImages",
           "choose_placement"]

#: SPEC §5 normalisation (mean, std) per ``data.dataset``; other datasets use statistics of their training split.
SPEC_NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class Batch(NamedTuple):
    """One global batch, every array sharded over the mesh's data axis along its first dimension.

    Attributes:
      image: float32 (B, H, W, C) normalised student view (augmented, and mixed when MixUp/CutMix are on).
      label: int32 (B,) the sample's own class (before mixing).
      target: float32 (B, K) soft targets: one-hot of ``label``, or the MixUp/CutMix mixture.
      teacher_image: float32 (B, H, W, C) clean view of the same samples (normalised, not augmented, not mixed)
        when ``augmentation.teacher_view == 'clean'``; None when the teacher sees ``image``.
      mask: bool (B,) True for real examples; False only on the padding of the last evaluation batch.
    """

    image: jax.Array
    label: jax.Array
    target: jax.Array
    teacher_image: jax.Array | None
    mask: jax.Array


def make_data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes) with the one axis ``axis``."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (axis,))


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *tags]))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training examples in ``epoch``: int64 (n,), a function of (seed, epoch) only."""
    return _rng(seed, 0x70, int(epoch)).permutation(n)


def split_validation(x: np.ndarray, y: np.ndarray, val_size: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Holds out ``val_size`` random training examples (a function of seed) as the validation split.

    Returns (x_train, y_train, x_val, y_val); both parts keep the original order. val_size 0 gives empty val arrays.
    """
    n = len(x)
    if val_size < 0 or val_size >= n:
        raise DataError(f"data.val_size = {val_size} must be in [0, {n}) for {n} training examples; set "
                        f"--config.data.val_size=N (e.g. {max(1, n // 10)})")
    val = np.zeros(n, bool)
    val[_rng(seed, 0x76).permutation(n)[:val_size]] = True
    return x[~val], y[~val], x[val], y[val]


def cap_examples(x: np.ndarray, y: np.ndarray, max_examples: int, seed: int, tag: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic random subset of at most ``max_examples`` examples (original order kept); 0 = all."""
    if not max_examples or len(x) <= max_examples:
        return x, y
    keep = np.sort(_rng(seed, 0x63, tag).permutation(len(x))[:max_examples])
    return x[keep], y[keep]


def normalization_stats(dataset: str, x_train: np.ndarray, mean: Sequence[float] = (), std: Sequence[float] = ()
                        ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the [0, 1] scale.

    Explicit ``mean``/``std`` win; else SPEC §5 values for ``dataset`` 'mnist' / 'cifar'; else the population mean and
    std of ``x_train`` (uint8 (N, H, W, C)) over N, H, W, accumulated in float64.
    """
    c = x_train.shape[-1]
    if len(mean) or len(std):
        if len(mean) != len(std) or len(mean) not in (1, c):
            raise DataError(f"data.normalization: mean {list(mean)} and std {list(std)} must both have 1 or {c} "
                            f"entries (the images have {c} channel(s))")
        m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        return (m * c, s * c) if len(m) == 1 else (m, s)
    if dataset in SPEC_NORMALIZATION:
        m, s = SPEC_NORMALIZATION[dataset]
        if len(m) != c:
            raise DataError(f"data.dataset = '{dataset}' has {len(m)}-channel normalisation but the images have {c} "
                            f"channel(s); set --config.data.dataset=custom (statistics from the data) or give "
                            f"data.normalization.mean/std")
        return m, s
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, len(x_train), 8192):
        chunk = x_train[start:start + 8192].reshape(-1, c).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    count = x_train.size // c
    m = total / count
    s = np.sqrt(np.maximum(total_sq / count - m * m, 0.0))
    return tuple(float(v) for v in m), tuple(float(max(v, 1e-3)) for v in s)


def process_local_rows(sharding: NamedSharding, n: int) -> slice:
    """The contiguous rows of a global (n, ...) array that this process's devices hold under ``sharding``."""
    spans = set()
    for index in sharding.addressable_devices_indices_map((n,)).values():
        s = index[0]
        spans.add((s.start or 0, n if s.stop is None else s.stop))
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    covered = np.zeros(n, bool)
    for a, b in spans:
        covered[a:b] = True
    if not covered[lo:hi].all():
        raise DataError("the mesh gives this process non-contiguous rows of the batch; order the mesh's devices "
                        "by process (jax.make_mesh does)")
    return slice(lo, hi)


PLACEMENTS = ("auto", "device", "host")


def _memory_mapped(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


class HostImages:
    """Rows ``rows`` of a host uint8 image array (often memory-mapped), read on demand: ``x[i]`` for a slice or an
    index array returns those images as a new array, reading the source in increasing row order (sequential on
    disk) whatever order is asked for. Has ``shape``, ``dtype``, ``size``, ``nbytes`` and ``len`` like the array it
    stands for, so split statistics can walk it in chunks without loading it whole."""

    def __init__(self, source: np.ndarray, rows: np.ndarray):
        self.source, self.rows = source, np.asarray(rows, np.int64)
        self.shape = (len(self.rows), *source.shape[1:])
        self.dtype = source.dtype
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> np.ndarray:
        want = self.rows[i]
        if isinstance(i, slice):
            return np.asarray(self.source[want])
        order = np.argsort(want, kind="stable")
        out = np.empty((len(want), *self.shape[1:]), self.dtype)
        out[order] = self.source[want[order]]
        return out


def choose_placement(requested: str, nbytes: int, devices: Sequence[jax.Device], memory_mapped: bool) -> str:
    """'device' or 'host' for a dataset whose splits take ``nbytes`` as uint8.

    'device' and 'host' are kept; 'auto' gives 'host' when ``nbytes`` exceeds a quarter of the smallest free memory
    (``bytes_limit - bytes_in_use``) among ``devices`` — the rest is for the model, its optimiser state and
    activations — or, on devices without memory statistics (CPU), when the source is memory-mapped; else 'device'.
    """
    if requested not in PLACEMENTS:
        raise DataError(f"data.placement = {requested!r}: choose 'auto', 'device' or 'host'")
    if requested != "auto":
        return requested
    free = []
    for d in devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if stats and stats.get("bytes_limit"):
            free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    if not free:
        return "host" if memory_mapped else "device"
    return "host" if nbytes > min(free) // 4 else "device"


FROM_CONFIG = object()  # sentinel: build the transform from the spec


class DataPipeline:
    """Train / val / test batches of one dataset, on device, sharded over ``mesh``'s data axis.

    Args:
      dataset: the loaded :class:`Dataset` (train and test splits).
      spec: the :class:`~jaxkd.data.spec.DataSpec` of the validated config's ``data`` section
        (``DataSpec.from_config(config.data)``).
      seed: the run's seed (validation split, permutations, augmentation keys).
      mesh: device mesh; default :func:`make_data_mesh` over all devices.
      data_axis: the mesh axis the batch is sharded over.
      num_classes: width K of the targets (the model's classes); default and minimum: the dataset's classes.
      train_transform / eval_transform / mix: override the ``jaxkd.data.augment`` functions built from the
        spec (signatures as ``make_train_transform`` / ``make_eval_transform`` / ``make_mix`` return);
        ``mix=None`` turns mixing off, the default :data:`FROM_CONFIG` builds it from ``spec.mix``.
    """

    def __init__(self, dataset: Dataset, spec: DataSpec, *, seed: int = 42, mesh: Mesh | None = None,
                 data_axis: str = "data", train_transform: Callable | None = None,
                 eval_transform: Callable | None = None, mix: Callable | None | object = FROM_CONFIG,
                 num_classes: int = 0):
        self.dataset, self.spec = dataset, spec
        if num_classes and num_classes < dataset.num_classes:
            raise DataError(f"the model has {num_classes} classes but the data has {dataset.num_classes}: set "
                            f"--config.model.num_classes={dataset.num_classes}")
        self.num_classes = int(num_classes or dataset.num_classes)
        self.seed = int(seed)
        self.mesh = mesh if mesh is not None else make_data_mesh(axis=data_axis)
        self.data_axis = data_axis
        if data_axis not in self.mesh.axis_names:
            raise DataError(f"the mesh has axes {self.mesh.axis_names}; the batch needs an axis named '{data_axis}'")
        self.num_shards = int(self.mesh.shape[data_axis])
        self.batch_size, self.eval_batch_size = spec.batch_size, spec.eval_batch_size
        for field, b in (("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size)):
            if b < 1 or b % self.num_shards:
                raise DataError(f"data.{field} = {b} must be a positive multiple of the {self.num_shards} devices "
                                f"on the mesh axis '{data_axis}'")
        max_examples = spec.max_examples
        # the rows of each split (the same functions on row numbers instead of images: nothing is copied yet)
        r_tr, _, r_val, _ = split_validation(*(np.arange(len(dataset.y_train)),) * 2,
                                             spec.val_size, self.seed)
        rows = {"train": (dataset.x_train, dataset.y_train, cap_examples(r_tr, r_tr, max_examples, self.seed, 0)[0]),
                "val": (dataset.x_train, dataset.y_train, cap_examples(r_val, r_val, max_examples, self.seed, 1)[0]),
                "test": (dataset.x_test, dataset.y_test,
                         cap_examples(*(np.arange(len(dataset.y_test)),) * 2, max_examples, self.seed, 2)[0])}
        nbytes = sum(len(r) * int(np.prod(x.shape[1:])) for x, _, r in rows.values())
        mapped = _memory_mapped(dataset.x_train) or _memory_mapped(dataset.x_test)
        self.placement = choose_placement(spec.placement, nbytes, list(self.mesh.local_devices), mapped)
        host = self.placement == "host"
        self.splits = {k: (HostImages(x, r) if host else x[r], y[r]) for k, (x, y, r) in rows.items()}
        x_tr = self.splits["train"][0]
        if len(x_tr) < self.batch_size:
            raise DataError(f"data.batch_size = {self.batch_size} is larger than the {len(x_tr)} training examples "
                            f"(after the validation split); lower --config.data.batch_size")
        self.mean, self.std = normalization_stats(spec.dataset, x_tr, spec.mean, spec.std)
        self.teacher_view = spec.teacher_view
        self.train_transform, self.eval_transform, self.mix = train_transform, eval_transform, mix
        self._replicated = NamedSharding(self.mesh, P())
        self._sharded = NamedSharding(self.mesh, P(data_axis))
        self._device: dict[str, tuple[jax.Array, jax.Array]] = {}
        self._rows: dict[int, slice] = {}
        self._base_key = jax.random.fold_in(jax.random.key(self.seed), 0x64617461)
        if host:  # the host gathers this process's rows; the device augments them
            self._train_step, self._eval_step = self._jit(self._augment_train), self._jit(self._prepare_eval)
            self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxkd-data")
        else:  # one jitted function gathers from the device copy and augments
            self._train_step, self._eval_step = self._jit(self._train_fn), self._jit(self._eval_fn)

    @classmethod
    def from_config(cls, config, *, mesh: Mesh | None = None, dataset: Dataset | None = None,
                    **kwargs) -> DataPipeline:
        """From a validated ``config``: loads ``config.data.source`` (unless ``dataset`` is given) and builds the
        pipeline of ``DataSpec.from_config(config.data)`` with ``config.seed`` and ``config.model.num_classes``."""
        d = config.data
        if dataset is None:
            dataset = load_arrays(d.source, data_dir=d.data_dir, image_size=int(d.image_size))
        kwargs.setdefault("num_classes", int(config.model.num_classes))
        return cls(dataset, DataSpec.from_config(d), seed=int(config.seed), mesh=mesh, **kwargs)

    # -- sizes --------------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the model's input."""
        return self.dataset.image_shape

    def num_examples(self, split: str) -> int:
        """Examples in 'train' (after the validation hold-out), 'val' or 'test'."""
        return len(self._split(split)[1])

    @property
    def steps_per_epoch(self) -> int:
        """Training steps per epoch: ``n_train // batch_size`` (the last partial batch is dropped)."""
        return self.num_examples("train") // self.batch_size

    def num_eval_batches(self, split: str) -> int:
        """Batches :meth:`eval_batches` yields for ``split``: ceil(n / eval_batch_size)."""
        return -(-self.num_examples(split) // self.eval_batch_size)

    # -- device arrays ------------------------------------------------------------------------------------------
    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}: choose 'train', 'val' or 'test'")
        return self.splits[split]

    def device_arrays(self, split: str) -> tuple[jax.Array, jax.Array]:
        """The split's uint8 images (N, H, W, C) and int32 labels (N,), replicated on every device of the mesh."""
        if split not in self._device:
            x, y = self._split(split)
            x = x[:] if isinstance(x, HostImages) else x
            put = lambda a: jax.make_array_from_callback(a.shape, self._replicated, lambda i: a[i])  # noqa: E731
            self._device[split] = (put(x), put(y))
        return self._device[split]

    def _local(self, idx: np.ndarray) -> np.ndarray:
        """The entries of a global batch's indices that this process's devices hold."""
        if len(idx) not in self._rows:
            self._rows[len(idx)] = process_local_rows(self._sharded, len(idx))
        return idx[self._rows[len(idx)]]

    def _global_indices(self, idx: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(self._sharded, np.ascontiguousarray(self._local(idx), np.int32),
                                                      (len(idx),))

    def _host_rows(self, split: str, idx: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """(images, labels) of the global batch ``idx`` of ``split`` as arrays sharded over the mesh, this process
        reading from host memory only the rows of its own shard."""
        x, y = self._split(split)
        local = self._local(idx)
        put = lambda a, full: jax.make_array_from_process_local_data(self._sharded, a, full)  # noqa: E731
        return (put(x[local], (len(idx), *x.shape[1:])), put(np.ascontiguousarray(y[local]), (len(idx),)))

    def _ahead(self, calls: Iterator[Callable[[], Any]]) -> Iterator[Any]:
        """Runs each call of ``calls`` on the reader thread one ahead of the consumer (host placement)."""
        pending = None
        for call in calls:
            nxt = self._reader.submit(call)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()

    # -- jitted per-step functions ------------------------------------------------------------------------------
    def _ensure_transforms(self) -> None:
        """Builds the transforms not given to the constructor from the spec (first use only)."""
        if self.train_transform is None or self.eval_transform is None or self.mix is FROM_CONFIG:
            from jaxkd.data import augment

            if self.train_transform is None:
                self.train_transform = augment.make_train_transform(self.spec.augment, mean=self.mean, std=self.std)
            if self.eval_transform is None:
                self.eval_transform = augment.make_eval_transform(mean=self.mean, std=self.std)
            if self.mix is FROM_CONFIG:
                self.mix = augment.make_mix(self.spec.mix, self.num_classes)

    def _jit(self, fn: Callable) -> Callable:
        """``jax.jit(fn)`` called under the mesh. On a mesh with Explicit axes ``fn`` runs with automatic sharding
        inside (the augmentations need not know about sharding types) and hands back data-sharded outputs."""
        if any(t == AxisType.Explicit for t in self.mesh.axis_types):
            fn = jax.sharding.auto_axes(fn, out_sharding=P(self.data_axis))
        jitted = jax.jit(fn)

        def run(*args):
            with jax.set_mesh(self.mesh):
                return jitted(*args)
        return run

    def _constrain(self, tree):
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, P(self.data_axis)), tree)

    def _train_fn(self, x_all, y_all, idx, epoch, step):
        images = self._constrain(jnp.take(x_all, idx, axis=0))
        labels = self._constrain(jnp.take(y_all, idx, axis=0))
        return self._augment_train(images, labels, epoch, step)

    def _augment_train(self, images, labels, epoch, step):
        key = jax.random.fold_in(jax.random.fold_in(self._base_key, epoch), step)
        k_aug, k_mix = jax.random.split(key)
        x = self.train_transform(k_aug, images)
        teacher = self.eval_transform(images) if self.teacher_view == "clean" else None
        if self.mix is not None:
            x, target = self.mix(k_mix, x, labels)
        else:
            target = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        mask = jnp.ones(labels.shape, bool)
        return self._constrain(Batch(x.astype(jnp.float32), labels, target.astype(jnp.float32),
                                     None if teacher is None else teacher.astype(jnp.float32), mask))

    def _eval_fn(self, x_all, y_all, idx, n_valid):
        images = self._constrain(jnp.take(x_all, idx, axis=0))
        labels = self._constrain(jnp.take(y_all, idx, axis=0))
        return self._prepare_eval(images, labels, n_valid)

    def _prepare_eval(self, images, labels, n_valid):
        x = self.eval_transform(images).astype(jnp.float32)
        mask = jnp.arange(labels.shape[0]) < n_valid
        target = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        return self._constrain(Batch(x, labels, target, None, mask))

    # -- iteration ----------------------------------------------------------------------------------------------
    def train_batches(self, epoch: int, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Augmented training batches of ``epoch`` from ``start_step`` (resume) on.

        Yields ``steps_per_epoch - start_step`` batches (at most ``num_steps``), each the global batch
        ``permutation[step * B:(step + 1) * B]`` of :func:`epoch_permutation` (seed, epoch), augmented with the key
        fold_in(fold_in(key(seed), epoch), step).
        """
        steps = self.steps_per_epoch
        if not 0 <= start_step <= steps:
            raise DataError(f"start_step {start_step} is outside the epoch's {steps} steps")
        end = steps if num_steps is None else min(steps, start_step + int(num_steps))
        self._ensure_transforms()
        perm = epoch_permutation(self.seed, epoch, self.num_examples("train"))
        b = self.batch_size
        if self.placement == "host":
            reads = (lambda s=step: self._host_rows("train", perm[s * b:(s + 1) * b])
                     for step in range(start_step, end))
            for step, (images, labels) in zip(range(start_step, end), self._ahead(reads)):
                yield self._train_step(images, labels, np.int32(epoch), np.int32(step))
            return
        x_all, y_all = self.device_arrays("train")
        for step in range(start_step, end):
            idx = self._global_indices(perm[step * b:(step + 1) * b])
            yield self._train_step(x_all, y_all, idx, np.int32(epoch), np.int32(step))

    def eval_batches(self, split: str = "val") -> Iterator[Batch]:
        """Every example of ``split`` ('train', 'val' or 'test') in order, normalised, not augmented.

        Batches have ``eval_batch_size`` rows; the last is padded (with example 0) and its ``mask`` is False on the
        padding, so sums over ``mask`` count each example exactly once. An empty split yields nothing.
        """
        self._ensure_transforms()
        n = self.num_examples(split)
        b = self.eval_batch_size
        batches = []
        for start in range(0, n, b):
            idx = np.arange(start, start + b)
            valid = min(b, n - start)
            idx[valid:] = 0
            batches.append((idx, valid))
        if self.placement == "host":
            reads = (lambda i=idx: self._host_rows(split, i) for idx, _ in batches)
            for (_, valid), (images, labels) in zip(batches, self._ahead(reads)):
                yield self._eval_step(images, labels, np.int32(valid))
            return
        x_all, y_all = self.device_arrays(split) if n else (None, None)
        for idx, valid in batches:
            yield self._eval_step(x_all, y_all, self._global_indices(idx), np.int32(valid))

"""tf.data input pipeline: this process's share of a TFDS split, batched for its devices.

Training data is a function of the step: the split is cut into data shards (one per process
by default); epoch ``e`` shuffles shard ``k`` with a seed derived from (seed, e, k) and
augments its example ``i`` with a seed derived from (seed, k, e, i), so resuming at step ``t``
rebuilds exactly the batches an uninterrupted run would have seen
(``train_batches(..., start_step=t)`` skips the first examples before decoding them).

A training stream given ``num_steps`` ends after them, so that no work for steps beyond the
run (the next epoch's shuffle buffer, decoded images in flight) is left to cancel when
training ends; ``Batches.close`` stops it early (preemption, errors).

Evaluation data covers the split exactly once: the last batch is padded and carries a
``mask`` that is 0 on padding, and every process yields the same number of batches.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
from typing import Callable, Iterator, Optional

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow.python.eager import context  # the global seed has no public getter

from vgg_jax.parallel import sharding
from vgg_jax.data import augment

Batch = dict[str, np.ndarray]
_ABANDONED: list = []  # tf.data iterators left running until the process exits (see abandon)


def process_split(split: str, process_index: int, process_count: int) -> str:
    """This process's disjoint, near-equal share of ``split`` (TFDS split syntax)."""
    return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def _with_options(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    # The CPUs this process may use, not the host's: a container's 2 cores on a 200-core host.
    options.threading.private_threadpool_size = len(os.sched_getaffinity(0)) or 1
    options.threading.max_intra_op_parallelism = 1  # parallelism across images, not within
    # No autotuning model thread: destroying an iterator waits for that thread to wake from
    # its sleep between optimisation rounds, which held the end of runs for 14-60 s (seen
    # with gdb: the main thread in ~RootDataset::Iterator, the model thread in
    # Model::OptimizeLoop). Maps then run on every thread of the pool, and prefetch buffers
    # still size themselves (their own autotuner), at the same images/s on vgg_shapes.
    options.autotune.enabled = False
    return ds.with_options(options)


def _encoded(builder: tfds.core.DatasetBuilder, split: str, cache: bool) -> tf.data.Dataset:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    return ds.cache() if cache else ds


def split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Number of examples in ``split`` (slicing syntax allowed)."""
    return builder.info.splits[split].num_examples


def _to_devices(batch: Batch, num_devices: int) -> Batch:
    """Reshapes leading ``local_batch`` to (num_devices, local_batch // num_devices)."""
    return {k: v.reshape(num_devices, -1, *v.shape[1:]) for k, v in batch.items()}


def epoch_steps(builder: tfds.core.DatasetBuilder, split: str, sub_batch: int,
                num_shards: int) -> int:
    """Steps per epoch when each of ``num_shards`` shards gives ``sub_batch`` examples a step."""
    shard_size = min(split_size(builder, process_split(split, i, num_shards))
                     for i in range(num_shards))
    if shard_size < sub_batch:
        raise ValueError(f"The split {split!r} has {shard_size} examples per data shard, "
                         f"fewer than {sub_batch}: use a smaller batch_size.")
    return shard_size // sub_batch


class Batches:
    """An iterator of batches that can be closed: ``close`` ends its tf.data iterator now.

    A context manager too. Closing releases the tf.data pipeline at a known point instead of
    whenever the garbage collector finds it (which could stall the end of a run).
    """

    def __init__(self, ds: tf.data.Dataset, convert: Callable[[Batch], Batch]):
        self._it = iter(ds.as_numpy_iterator())
        self._convert = convert

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> Batch:
        if self._it is None:
            raise StopIteration
        return self._convert(next(self._it))

    def close(self) -> None:
        """Stops the pipeline; later ``next`` calls raise ``StopIteration``.

        Instant once the stream is exhausted; mid-stream, TensorFlow waits for the work in
        flight (a preempted CIFAR run at 64x64 waited 30 s): see ``abandon``.
        """
        it, self._it = self._it, None
        del it

    def abandon(self) -> None:
        """Ends the stream without waiting for its work in flight, for a process that is
        about to exit (preemption, errors): the pipeline is kept, idle, until it does."""
        if self._it is not None:
            _ABANDONED.append(self._it)
        self._it = None

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close() if exc_type is None else self.abandon()


def abandoned() -> bool:
    """Whether a stream was abandoned: exiting must then skip TensorFlow's teardown."""
    return bool(_ABANDONED)


def train_batches(builder: tfds.core.DatasetBuilder, split: str, *, local_batch: int,
                  crop: int, scale_min: int, scale_max: int, seed: int,
                  start_step: int = 0, num_steps: Optional[int] = None,
                  shuffle_buffer: int = 0, cache: bool = True,
                  crop_mode: str = "scale", pca_std: float = 0.0, num_shards: int = 0,
                  randaugment: tuple[int, float] = (0, 9.0), num_devices: Optional[int] = None, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> tuple[int, Batches]:
    """(steps per epoch, the training batches of steps ``start_step + 1`` on).

    ``num_steps`` batches, or endless without it.

    Batches hold ``images`` (num_devices, per_device, crop, crop, 3) uint8, ``flip`` (whether
    to mirror the image, which the device does), ``shift`` (the per-image PCA colour offset,
    zero when ``pca_std`` is 0) and ``labels``.
    ``shuffle_buffer=0`` shuffles each shard whole; ``crop_mode`` and ``pca_std`` are
    those of ``augment.train_image``; ``randaugment`` = (N, M) applies RandAugment to each
    crop (N = 0: off).

    The split is cut into ``num_shards`` (default: one per process) and every global batch
    is the concatenation of an equal slice from each shard, in shard order; each process
    reads its own consecutive shards. So the data a step sees depends on ``num_shards`` and
    not on how many processes share the work: 2 processes of 2 devices and 1 process of 4
    devices with ``num_shards=2`` train on identical batches.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_devices = num_devices or jax.local_device_count()
    num_shards = num_shards or process_count
    if num_shards % process_count or local_batch % (num_shards // process_count):
        raise ValueError(f"{num_shards} data shards do not divide over {process_count} "
                         f"processes with {local_batch} examples each: use a multiple.")
    per_process = num_shards // process_count
    sub_batch = local_batch // per_process
    steps_per_epoch = epoch_steps(builder, split, sub_batch, num_shards)
    largest_shard = -(-split_size(builder, split) // num_shards)  # even_splits differ by <= 1
    start_epoch, skip = divmod(start_step, steps_per_epoch)
    end_epoch = (1 << 40 if num_steps is None
                 else -(-(start_step + num_steps) // steps_per_epoch))
    with _own_seeds():
        shards = [_shard_batches(builder, process_split(split, shard, num_shards), shard,
                                 sub_batch=sub_batch, steps_per_epoch=steps_per_epoch,
                                 start_epoch=start_epoch, end_epoch=end_epoch, skip=skip,
                                 crop=crop, scale_min=scale_min, scale_max=scale_max, seed=seed,
                                 shuffle_buffer=shuffle_buffer or largest_shard, cache=cache,
                                 crop_mode=crop_mode, pca_std=pca_std, randaugment=randaugment)
                  for shard in range(process_index * per_process,
                                     (process_index + 1) * per_process)]
    ds = shards[0] if len(shards) == 1 else tf.data.Dataset.zip(tuple(shards)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]})
    if num_steps is not None:
        ds = ds.take(num_steps)
    ds = _with_options(ds.prefetch(tf.data.AUTOTUNE))
    return steps_per_epoch, Batches(ds, lambda batch: _to_devices(batch, num_devices))


@contextlib.contextmanager
def _own_seeds():
    """Builds datasets whose shuffles depend on our seeds alone, not on a global TF seed.

    ``tf.random.set_seed`` (Keras's ``set_random_seed`` calls it) would otherwise mix into
    every shuffle, and a global seed of 0 breaks shuffles seeded by a tensor.
    """
    previous = context.global_seed()
    if previous is None:
        yield
        return
    tf.random.set_seed(None)
    try:
        yield
    finally:
        tf.random.set_seed(previous)


def _shard_batches(builder, split: str, shard: int, *, sub_batch: int, steps_per_epoch: int,
                   start_epoch: int, end_epoch: int, skip: int, crop: int, scale_min: int,
                   scale_max: int, seed: int, shuffle_buffer: int, cache: bool,
                   crop_mode: str, pca_std: float, randaugment: tuple[int, float]
                   ) -> tf.data.Dataset:
    """Batches of one data shard up to ``end_epoch``: a function of (seed, shard, epoch, index)."""
    base = _encoded(builder, split, cache).enumerate()
    per_epoch = steps_per_epoch * sub_batch

    def epoch_examples(epoch):
        # Shuffling depends on the epoch alone; resuming skips examples before decoding them.
        ds = base.shuffle(shuffle_buffer, seed=(seed * 100_003 + epoch) * 1_009 + shard,
                          reshuffle_each_iteration=False).take(per_epoch)
        ds = ds.skip(tf.where(epoch == start_epoch, tf.cast(skip * sub_batch, tf.int64), 0))
        return ds.map(lambda index, example: (epoch, index, example))

    def preprocess(epoch, index, example):
        image_bytes, label = example
        ex_seed = tf.stack([tf.cast(seed, tf.int64) * 1_009 + shard, epoch * (1 << 32) + index])
        image = augment.train_image(image_bytes, ex_seed, crop, scale_min, scale_max,
                                    flip=False, crop_mode=crop_mode)
        if randaugment[0] > 0:
            image = augment.randaugment(image, ex_seed, *randaugment)
        colour_seed = tf.random.experimental.stateless_split(ex_seed, 4)[3]  # as train_image
        shift = augment.pca_shift(colour_seed, pca_std) if pca_std > 0 else tf.zeros([3])
        return {"images": augment.to_uint8(image), "flip": augment.flip_draw(ex_seed),
                "shift": shift, "labels": label}

    # One dataset over all epochs, so that the next epoch's shuffle buffer fills in the
    # background instead of stalling training at every epoch boundary.
    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch_examples)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(sub_batch, drop_remainder=True)


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, local_batch: int, crop: int,
                 scale: int, cache: bool = True,
                 num_devices: Optional[int] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> tuple[int, Iterator[Batch]]:
    """(number of batches, iterator) over this process's share of ``split``, each example once.

    Every batch holds ``images`` (uint8), ``labels`` and ``mask`` (1 for real examples, 0 for padding);
    all processes yield the same number of batches, padding with empty ones where needed.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_devices = num_devices or jax.local_device_count()
    num_examples = split_size(builder, split)
    if num_examples == 0:
        raise ValueError(f"The evaluation split {split!r} is empty.")
    num_batches = math.ceil(math.ceil(num_examples / process_count) / local_batch)
    ds = _encoded(builder, process_split(split, process_index, process_count), cache)
    ds = ds.map(lambda b, y: {"images": augment.to_uint8(augment.eval_image(b, crop, scale)),
                              "labels": y},
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = _with_options(ds.batch(local_batch).prefetch(tf.data.AUTOTUNE))

    def batches() -> Iterator[Batch]:
        produced = 0
        for batch in ds.as_numpy_iterator():
            yield _to_devices(_pad(batch, local_batch), num_devices)
            produced += 1
        empty = {"images": np.zeros((local_batch, crop, crop, 3), np.uint8),
                 "labels": np.zeros((local_batch,), np.int64)}
        for _ in range(num_batches - produced):
            yield _to_devices(_pad({k: v[:0] for k, v in empty.items()}, local_batch),
                              num_devices)

    return num_batches, batches()


def _pad(batch: Batch, size: int) -> Batch:
    """Pads every array to ``size`` rows and adds ``mask``."""
    n = len(batch["labels"])
    out = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
           for k, v in batch.items()}
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


def prefetch_to_device(batches: Iterator[Batch], size: int = 2) -> Iterator:
    """Copies the next ``size`` batches to the local devices ahead of their use.

    Each array (num_devices, per_device, ...) is split over the devices along its first
    axis, as ``jax.pmap`` expects, so the transfer overlaps the previous step.
    """
    queue = collections.deque()
    for batch in batches:
        queue.append(sharding.to_local_devices(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()

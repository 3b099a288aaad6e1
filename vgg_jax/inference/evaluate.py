"""The paper's evaluation protocols (sections 3.2 and 4) for one checkpoint or an ensemble:
``Net`` (a restored model), ``Evaluator`` (single crop, dense, multi-crop, both; several
test scales) and ``evaluate``. The command is ``python -m vgg_jax.evaluate``
(``vgg_jax/evaluate.py``, where the protocols are described)."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from typing import Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from vgg_jax import models
from vgg_jax.compute import modules as compute
from vgg_jax.data import augment, pipeline, sources
from vgg_jax.errors import UserError
from vgg_jax.parallel import sharding
from vgg_jax.store import checkpoints
from vgg_jax.store.record import ModelRecord
from vgg_jax.training import schema
from vgg_jax.training.metrics import topk_errors

PROTOCOLS = ("single", "dense", "multicrop", "dense+multicrop")


class Net:
    """A model with its variables and its ``ModelRecord`` (see ``Net.load``).

    ``load`` builds the model with ``vgg_jax.compute``'s layers (per platform); a model
    passed in computes as it was built.
    """

    def __init__(self, model: models.VGG, variables: dict, record: ModelRecord):
        # Batches are split over all local devices; the variables are replicated on each.
        self._split = sharding.local_batch_sharding()
        self.model, self.record = model, record
        self.variables = jax.device_put(variables, sharding.local_replicated_sharding())
        self._logits = jax.jit(lambda v, x: self.model.apply(v, x))
        self._dense = jax.jit(lambda v, x, m: self.model.apply(v, x, dense=True, mask=m))

    @classmethod
    def load(cls, path: str, ema: bool = True) -> "Net":
        """Restores the latest checkpoint of a training workdir (or checkpoints folder).

        A run trained with ``ema_decay`` is evaluated with its EMA weights unless ``ema`` is
        False.
        """
        record, variables = checkpoints.load_latest(path, ema)
        return cls(compute.fast(record.build()), variables, record)

    def _put(self, array: np.ndarray):
        return jax.device_put(array, self._split) \
            if len(array) % len(jax.local_devices()) == 0 else array

    def posteriors(self, images: np.ndarray) -> np.ndarray:
        """Soft-max posteriors of a batch of crops (N, crop, crop, 3)."""
        logits = self._logits(self.variables, self._put(images))
        return np.asarray(jax.nn.softmax(logits.astype(jnp.float32)))

    def dense_posteriors(self, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Posteriors from the spatially averaged class score map of padded images."""
        logits = self._dense(self.variables, self._put(images), self._put(mask))
        return np.asarray(jax.nn.softmax(logits.astype(jnp.float32)))


def read_record(path: str) -> ModelRecord:
    """The record of the latest checkpoint under ``path``, without restoring any array."""
    store = checkpoints.open_read_only(path)
    record = store.record()
    store.close()
    return record


def check_protocols(protocols: Sequence[str], scales: Sequence[int], crop: int) -> None:
    """Raises ``UserError`` for unknown protocols or test scales below the crop size."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise UserError(f"Unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}.")
    small = [q for q in scales if q < crop]
    if small:
        raise UserError(f"Test scales {small} are smaller than the crop {crop}: every Q "
                        f"must be at least {crop}.")


def multicrop_positions(height: int, width: int, crop: int, grid: int = 5) -> list[tuple]:
    """Top-left corners of a ``grid`` x ``grid`` lattice of crops covering the image."""
    if height < crop or width < crop:
        raise UserError(f"A {height}x{width} image is smaller than the {crop} crop.")
    ys = np.linspace(0, height - crop, grid).round().astype(int)
    xs = np.linspace(0, width - crop, grid).round().astype(int)
    return [(int(y), int(x)) for y in ys for x in xs]


def _pad(image: np.ndarray, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pads an image (H, W, 3) up to multiples of ``bucket``; returns it and its mask."""
    h, w = image.shape[:2]
    ph, pw = math.ceil(h / bucket) * bucket, math.ceil(w / bucket) * bucket
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = image
    mask = np.zeros((ph, pw, 1), np.float32)
    mask[:h, :w] = 1
    return padded, mask


class Evaluator:
    """Sums each protocol's posteriors over scales, flips, crops and nets, batch by batch.

    Crops of the same size share batches across images; dense inputs share batches within a
    (scale, padded shape) bucket. Every batch has ``batch_size`` rows (padded when flushed),
    so each shape compiles once.
    """

    def __init__(self, nets: Sequence[Net], protocols: Sequence[str], scales: Sequence[int],
                 crop: int, mean_rgb, std_rgb, num_images: int, batch_size: int = 32,
                 bucket: int = 64):
        check_protocols(protocols, scales, crop)
        self.nets, self.protocols = list(nets), list(protocols)
        self.crop, self.batch_size, self.bucket = crop, batch_size, bucket
        self.mean = np.asarray(mean_rgb, np.float32)
        self.std = np.asarray(std_rgb, np.float32)
        classes = self.nets[0].record.num_classes
        self.sums = {p: np.zeros((num_images, classes)) for p in ("single", "dense", "multicrop")}
        self._pending: dict[tuple, list] = {}

    def add(self, index: int, rescaled: dict[int, np.ndarray]) -> None:
        """Queues image ``index`` given as {Q: the image rescaled so its smallest side is Q}."""
        wants = set(p for proto in self.protocols for p in proto.split("+"))
        per_scale = 1.0 / len(rescaled)
        for image in rescaled.values():
            image = (np.asarray(image, np.float32) - self.mean) / self.std
            h, w = image.shape[:2]
            if "single" in wants:
                y, x = (h - self.crop) // 2, (w - self.crop) // 2
                self._queue(("single",), index, per_scale,
                            image[y:y + self.crop, x:x + self.crop])
            if "multicrop" in wants:
                for y, x in multicrop_positions(h, w, self.crop):
                    crop = image[y:y + self.crop, x:x + self.crop]
                    for view in (crop, crop[:, ::-1]):
                        self._queue(("multicrop",), index, per_scale / 50, view)
            if "dense" in wants:
                for view in (image, image[:, ::-1]):
                    padded, mask = _pad(view, self.bucket)
                    self._queue(("dense", padded.shape), index, per_scale / 2, padded, mask)

    def _queue(self, key: tuple, index: int, weight: float, image: np.ndarray,
               mask: Optional[np.ndarray] = None) -> None:
        queue = self._pending.setdefault(key, [])
        queue.append((index, weight, image, mask))
        if len(queue) == self.batch_size:
            self._flush(key)

    def _flush(self, key: tuple) -> None:
        queue = self._pending.pop(key, [])
        if not queue:
            return
        n = len(queue)
        images = np.zeros((self.batch_size, *queue[0][2].shape), np.float32)
        images[:n] = np.stack([q[2] for q in queue])
        if key[0] == "dense":
            masks = np.zeros((self.batch_size, *queue[0][3].shape), np.float32)
            masks[:n] = np.stack([q[3] for q in queue])
            probs = np.mean([net.dense_posteriors(images, masks) for net in self.nets], 0)
        else:
            probs = np.mean([net.posteriors(images) for net in self.nets], 0)
        index = np.array([q[0] for q in queue])
        weight = np.array([q[1] for q in queue])[:, None]
        np.add.at(self.sums[key[0]], index, probs[:n] * weight)

    def results(self) -> dict[str, np.ndarray]:
        """{protocol: posteriors (num_images, classes)} once every image has been added."""
        for key in list(self._pending):
            self._flush(key)
        out = {p: self.sums[p] for p in ("single", "dense", "multicrop")}
        out["dense+multicrop"] = (out["dense"] + out["multicrop"]) / 2
        return {p: out[p] for p in self.protocols}


def _rescaled_examples(builder, split: str, scales: Sequence[int]) -> Iterable:
    """(label, {Q: image rescaled to Q}) for this process's share of ``split``."""
    shard = pipeline.process_split(split, jax.process_index(), jax.process_count())
    ds = builder.as_dataset(split=shard, decoders={"image": tfds.decode.SkipDecoding()},
                            shuffle_files=False)
    ds = ds.map(lambda ex: (ex["label"], {q: augment.rescaled_image(ex["image"], q)
                                          for q in scales}),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def _scale_label(record: ModelRecord) -> str:
    if record.train_crop == "inception":
        return "inception crop"
    lo, hi = record.train_scale or (None, None)
    return "?" if lo is None else (f"{lo}" if lo == hi else f"[{lo};{hi}]")


def evaluate(config: ml_collections.ConfigDict, paths: Sequence[str],
             scales: Optional[Sequence[int]] = None, protocols: Sequence[str] = PROTOCOLS,
             split: Optional[str] = None, batch_size: int = 32, ema: bool = True
             ) -> list[dict]:
    """Evaluates the checkpoints at ``paths`` (an ensemble when several) under ``protocols``.

    Data come from ``config`` (dataset, data_dir, eval_split unless ``split`` is given);
    crop size and mean/std from the first checkpoint's metadata; ``scales`` default to its
    ``eval_scale``; checkpoints with EMA weights are evaluated with them unless ``ema`` is
    False. Returns one row per protocol.
    """
    schema.check(config)
    records = [read_record(p) for p in paths]  # cheap checks first, then data, then weights
    record = records[0]
    headless = [p for p, r in zip(paths, records) if not r.include_top]
    if headless:
        raise UserError(f"{headless[0]} holds a net without its classifier (no fc6-8): it "
                        f"cannot be evaluated on classes.")
    if len(paths) == 1:
        record.check_fits(ModelRecord.from_config(config), f"checkpoint {paths[0]!r}")
    scales = list(scales or [record.eval_scale])
    check_protocols(protocols, scales, record.image_size)
    split = split or config.eval_split
    builder = sources.get_builder(config.dataset, config.data_dir, config.manual_dir)
    sources.check_splits(builder, [split])
    sources.prepare(builder, config.manual_dir)
    if pipeline.split_size(builder, split) == 0:
        raise UserError(f"The split {split!r} of {config.dataset} is empty.")
    num_images = pipeline.split_size(builder, pipeline.process_split(
        split, jax.process_index(), jax.process_count()))
    nets = [Net.load(p, ema) for p in paths]
    evaluator = Evaluator(nets, protocols, scales, record.image_size, record.mean_rgb,
                          record.std_rgb, num_images, batch_size)
    start = time.time()
    labels = np.zeros(num_images, np.int64)
    for i, (label, rescaled) in enumerate(_rescaled_examples(builder, split, scales)):
        labels[i] = label
        evaluator.add(i, rescaled)
        if (i + 1) % 1000 == 0:
            rate = (i + 1) / (time.time() - start)
            logging.info("Evaluated %d/%d images, %.1f images/s, ETA %.0f s.", i + 1,
                         num_images, rate, (num_images - i - 1) / rate)
    posteriors = evaluator.results()
    seconds = time.time() - start
    rows = []
    for protocol, probs in posteriors.items():
        err1, err5 = topk_errors(probs, labels) if num_images else (0.0, 0.0)
        counts = np.array([err1 * num_images, err5 * num_images, num_images], np.float64)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
        rows.append({"protocol": protocol, "nets": len(nets),
                     "train_scale": _scale_label(record),
                     "test_scales": ",".join(map(str, scales)),
                     "top1_error": 100 * counts[0] / counts[2],
                     "top5_error": 100 * counts[1] / counts[2],
                     "images": int(counts[2]), "seconds": round(seconds, 1)})
    return rows


def format_table(rows: list[dict]) -> str:
    """Rows as a table laid out like the paper's Tables 3-6."""
    lines = ["| protocol | nets | train S | test Q | top-1 err % | top-5 err % | images | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['nets']} | {r['train_scale']} | "
                     f"{r['test_scales']} | {r['top1_error']:.2f} | {r['top5_error']:.2f} | "
                     f"{r['images']} | {r['seconds']} |")
    return "\n".join(lines)


def write_results(rows: list[dict], out_dir: str) -> None:
    """Writes ``results.json`` and ``results.csv`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

"""Reading a run's logged metrics back from its TensorBoard event files.

Training writes every logged scalar (``train_loss``, ``eval_top1``, ``images_per_sec``...) to
``WORKDIR/events.out.tfevents.*`` (one file per process start). This turns them back into
numbers for plots, notebooks and tests, without TensorBoard itself.
"""

from __future__ import annotations

import glob
import os

import numpy as np


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every scalar logged in ``workdir``.

    Event files are read oldest first, so where a resumed run logged a step again the later
    value wins. Non-scalar summaries (the config text) are skipped.
    """
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    # The file names start with the writer's start time (seconds since 1970).
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                array = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                         else np.asarray(value.simple_value))
                if array.ndim or not np.issubdtype(array.dtype, np.number):
                    continue
                out.setdefault(value.tag, {})[event.step] = float(array)
    return out


def curve(points: dict[int, float]) -> tuple[list[int], list[float]]:
    """(steps, values) in step order, for plotting one tag of ``read_scalars``."""
    steps = sorted(points)
    return steps, [points[s] for s in steps]

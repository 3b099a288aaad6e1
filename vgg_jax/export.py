"""A trained net for use outside JAX: StableHLO, SavedModel, TFLite and ONNX.

    python -m vgg_jax.export --checkpoint CKPT --format stablehlo|savedmodel|tflite|onnx
        --out DIR [--batch N] [--logits] [--image_size S] [--no-ema]

Every artefact takes uint8 RGB images (N, S, S, 3), S the checkpoint's crop size, applies
the checkpoint's own preprocessing ((x - mean) / std) and returns class probabilities
(``--logits``: logits), (N, classes). A larger S exports the paper's dense evaluation: the
class score map averaged over the image. ``--batch 0`` leaves N symbolic.

- ``stablehlo``: ``jax.export`` for CPU, CUDA and TPU, weights inlined, serialised to
  ``model.jax_exported`` (``jax.export.deserialize(...).call(images)``);
- ``savedmodel``: ``jax2tf`` with the weights as TF variables and a ``serving_default``
  signature (input ``images``), for TF Serving and ``tf.saved_model.load``;
- ``tflite``: ``model.tflite``, converted from that SavedModel;
- ``onnx``: ``model.onnx`` (opset 17, NCHW inside), built layer by layer from the net's
  Table 1 row with ``onnx.helper`` and run by ``onnxruntime``. Neither converter the issue
  names works with this stack: ``jax2onnx`` requires orbax-checkpoint < 0.11.37 (vgg_jax
  pins 0.12) and ``tf2onnx`` cannot read the ``XlaCallModule`` op that ``jax2tf`` emits.

DIR also gets ``labels.txt`` (class names, one per line, in class order) and
``export.json`` (what the graph takes and gives). DIR is written whole or not at all:
everything goes to ``DIR.partial`` first, and an existing DIR is never replaced.
``load(DIR)`` runs any artefact with its own runtime; the CLI checks each one against
``model.apply`` on a few images before it reports success.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.export")

import os
import sys
from typing import Optional, Sequence

import numpy as np

from vgg_jax import cli
from vgg_jax.errors import UserError
from vgg_jax.inference import evaluate
from vgg_jax.inference.export import (
    FORMATS,
    PARITY_TOLERANCE,
    check_packages,
    export,
    interface_for,
    load,
    parity_images,
    reference,
)
from vgg_jax.store import checkpoints


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("checkpoint", None, "A training workdir or convert --out.")
    flags.DEFINE_string("format", None, f"One of {', '.join(FORMATS)}.")
    flags.DEFINE_string("out", None, "Folder to create for the artefact (must not exist).")
    flags.DEFINE_integer("batch", 1, "Batch size of the graph; 0 for a symbolic one.")
    flags.DEFINE_bool("logits", False, "Return logits instead of probabilities.")
    flags.DEFINE_integer("image_size", 0, "Input side (default: the checkpoint's crop; larger "
                                          "exports dense evaluation).")
    flags.DEFINE_bool("ema", True, "Export the moving-average weights of a run trained with "
                                   "ema_decay (--noema: the raw weights).")
    flags.mark_flags_as_required(["checkpoint", "format", "out"])


def main(argv: Sequence[str]) -> Optional[int]:
    """CLI: ``python -m vgg_jax.export --checkpoint CKPT --format F --out DIR``."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}: export takes only flags.")
    if f.format not in FORMATS:
        raise UserError(f"unknown --format {f.format!r}: use one of {', '.join(FORMATS)}.")
    check_packages(f.format)
    if os.path.exists(f.out):
        raise UserError(f"{f.out} exists already: choose another --out, or delete it first.")
    iface = interface_for(evaluate.read_record(f.checkpoint), f.format, f.batch, f.logits,
                          f.image_size)
    record, variables = checkpoints.load_latest(f.checkpoint, f.ema)
    export(record, variables, iface, f.out, source=os.path.abspath(f.checkpoint))
    images = parity_images(iface)
    difference = float(np.abs(load(f.out)(images) - reference(record, variables, iface,
                                                               images)).max())
    print(f"{f.format} export of {record.arch} ({iface.output}, input "
          f"{'x'.join(str(d or 'N') for d in iface.input_shape())} uint8) in {f.out}; "
          f"max |difference| from model.apply on {len(images)} images: {difference:.2e}")
    if difference > PARITY_TOLERANCE:
        print(f"error: the exported graph differs from model.apply by {difference:.2e} "
              f"(more than {PARITY_TOLERANCE}); please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)

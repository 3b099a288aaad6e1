"""Pretrained torchvision and Keras VGG weights as vgg_jax checkpoints.

    python -m vgg_jax.convert --from torchvision --arch vgg16 vgg16-397923af.pth --out DIR
    python -m vgg_jax.convert --from keras --arch vgg19 \
        vgg19_weights_tf_dim_ordering_tf_kernels.h5 --out DIR

writes ``DIR/checkpoints/0``, which ``main`` (``--config.init_from=DIR``), ``evaluate`` and
``predict`` load like any training checkpoint. Layouts handled:
- torchvision (vgg11/13/16/19 and ``_bn``; ``.pth`` read without torch, or ``.safetensors``):
  OIHW kernels to HWIO; fc6 consumes an NCHW flatten of pool5, ours an NHWC one, so its
  input axis is permuted; BatchNorm weight/bias/running statistics. Expects RGB in [0, 1]
  normalised by ImageNet's mean and std, stored as mean 255*(0.485, 0.456, 0.406) and std
  255*(0.229, 0.224, 0.225).
- Keras (vgg16, vgg19; with and without top; legacy ``.h5`` or Keras 3 ``.weights.h5``):
  HWIO kernels already and an NHWC flatten, but the first layer reads BGR with Caffe's BGR
  mean subtracted, so its input channels are reversed and the mean is stored in RGB order.
The number of classes and (for Keras) the input size are read from the file's head.
"""

from __future__ import annotations

from typing import Sequence

from vgg_jax import models
from vgg_jax.errors import UserError
from vgg_jax.store.convert import SOURCES, convert, write


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_enum("from", None, list(SOURCES), "Where the weights come from.")
    flags.DEFINE_string("arch", None, "vgg11, vgg13, vgg16, vgg19 or *_bn.")
    flags.DEFINE_string("out", None, "Directory for the checkpoint (must not hold one).")
    flags.mark_flags_as_required(["from", "arch", "out"])


def main(argv: Sequence[str]) -> None:
    """CLI: ``python -m vgg_jax.convert --from SOURCE --arch ARCH --out DIR FILE``."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) != 2:
        raise UserError("give exactly one weight file (.pth, .safetensors or Keras .h5) "
                        "after the flags.")
    src = argv[1]
    variables, record = convert(f["from"].value, f.arch, src)
    directory = write(variables, record, f.out)
    n = models.count_params(variables["params"])
    print(f"{record.arch} ({n:,} parameters, {record.num_classes} classes, "
          f"{'with' if record.include_top else 'without'} top) from {src} -> {directory}")


if __name__ == "__main__":
    from vgg_jax import cli
    cli.run(main, define_flags)

"""``python -m vgg_jax.models --arch vgg16 [--image_size 224] [--num_classes 1000]``: a
per-layer table with output shapes, parameters and multiply-accumulates."""

from typing import Sequence

from absl import flags

from vgg_jax import cli
from vgg_jax.errors import UserError
from vgg_jax.models.spec import SPECS, canonical_name
from vgg_jax.models.vgg import create_model, format_summary, summary


def _known(arch: str) -> bool:
    try:
        canonical_name(arch)
    except ValueError:
        return False
    return True


def define_flags() -> None:
    flags.DEFINE_string("arch", "vgg16", f"One of {', '.join(SPECS)} or a letter A..E.")
    flags.register_validator("arch", _known,
                             message=f"--arch must be one of the valid names {', '.join(SPECS)} "
                                     f"or a letter A..E.")
    flags.DEFINE_integer("image_size", 224, "Input side in pixels.", lower_bound=32)
    flags.DEFINE_integer("num_classes", 1000, "Width of fc8.", lower_bound=1)
    flags.DEFINE_float("width", 1.0, "Multiplier on every layer's channels.", lower_bound=1e-6)


def main(argv: Sequence[str]) -> None:
    """CLI: ``python -m vgg_jax.models --arch vgg16 [--image_size 224] [--num_classes 1000]``."""
    cli.no_arguments(argv)
    f = flags.FLAGS
    model = create_model(f.arch, num_classes=f.num_classes, width=f.width)
    try:
        rows = summary(model, f.image_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(format_summary(rows, f"{model.arch} at {f.image_size}x{f.image_size}, "
                               f"{f.num_classes} classes"))


if __name__ == "__main__":
    cli.run(main, define_flags)

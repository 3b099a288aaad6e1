"""Top-5 classes of image files under a trained or converted checkpoint.

    python -m vgg_jax.predict --checkpoint DIR [--protocol single|dense|multicrop]
        [--scales 256,384] IMAGE [IMAGE ...]

Each image is preprocessed as the checkpoint expects (its stored mean and std, test scale Q
and crop) and evaluated under one of the paper's protocols (see ``vgg_jax.evaluate``).
Class names come with the checkpoint (image-folder runs) or, for 1000-class ImageNet nets,
with the package. A file that cannot be read as an image is reported and skipped.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.predict")

import sys
from typing import Sequence

from vgg_jax import cli
from vgg_jax.errors import UserError
from vgg_jax.inference import evaluate
from vgg_jax.inference.predict import class_names, predict, rescaled


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("checkpoint", None, "A training workdir or convert --out.")
    flags.DEFINE_enum("protocol", "single", list(evaluate.PROTOCOLS), "Test protocol.")
    flags.DEFINE_list("scales", [], "Test scales Q (default: the checkpoint's eval_scale).")
    flags.register_validator("scales", lambda v: all(q.strip().isdigit() for q in v),
                             message="--scales takes whole numbers, e.g. 256,384.")
    flags.DEFINE_integer("top", 5, "How many classes to print per image.", lower_bound=1)
    flags.DEFINE_bool("ema", True, cli.EMA_FLAG_HELP)
    flags.mark_flags_as_required(["checkpoint"])


def main(argv: Sequence[str]) -> int:
    """CLI: ``python -m vgg_jax.predict --checkpoint DIR IMAGE...``; 1 if an image failed."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) < 2:
        raise UserError("give one or more image files after the flags.")
    record = evaluate.read_record(f.checkpoint)
    if not record.include_top:
        raise UserError(f"{f.checkpoint} holds a net without its classifier (no fc6-8): "
                        f"it extracts features but cannot predict classes.")
    scales = [int(q) for q in f.scales] or [record.eval_scale]
    evaluate.check_protocols([f.protocol], scales, record.image_size)
    images, paths, failed = [], [], 0
    for path in argv[1:]:
        try:
            images.append(rescaled(path, scales))
            paths.append(path)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if images:
        names = class_names(record)
        net = evaluate.Net.load(f.checkpoint, f.ema)
        for path, best in zip(paths, predict(net, images, f.protocol, f.top)):
            print(f"{path} ({f.protocol}, Q={','.join(map(str, scales))})")
            for c, p in best:
                print(f"  {p:.4f}  {names[c]}")
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main, define_flags)

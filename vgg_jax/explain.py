"""What a trained VGG looks at: Grad-CAM, saliency, SmoothGrad, integrated gradients and
the dense evaluation's class score map.

    python -m vgg_jax.explain --checkpoint CKPT IMAGE... --method gradcam|saliency|smoothgrad|
        integrated-gradients|scoremap [--layer conv5_3] [--class K] --out DIR

Each method maps a batch of images, as RGB pixels (N, H, W, 3) in 0..255, to one map per
image of their size (N, H, W), explaining one class per image (default: the predicted one)
through its logit:
- ``gradcam`` (Selvaraju et al., 2017): the layer's activations weighted by the spatial mean
  of the logit's gradient with respect to them, rectified, upsampled bilinearly;
- ``saliency`` (Simonyan, Vedaldi & Zisserman, 2014, the VGG authors' own): the largest
  absolute gradient of the logit over the three colour channels of each pixel;
- ``smoothgrad`` (Smilkov et al., 2017): saliency averaged over noisy copies of the image
  (noise 15% of its pixel range);
- ``integrated-gradients`` (Sundararajan et al., 2017): (image - baseline) times the
  gradient averaged along the straight path from a black baseline (trapezoid rule);
  ``integrated_gradients`` returns the per-channel attributions, which sum to the logit's
  rise from the baseline; the map is their absolute sum over channels;
- ``scoremap``: the class posterior at every position of the dense evaluation's score map
  (fc6-8 slid over the whole image, one position per 32 pixels), each placed at the centre of
  the crop it sees. It takes images larger than the crop; the others take crop-size images.
Every method is jit-compiled and batched; the CLI writes, per image and method, a PNG of the
map over the photo and the map itself (``.npy``).
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.explain")

import os
import sys
from typing import Sequence

import numpy as np

from vgg_jax import cli
from vgg_jax.errors import UserError
from vgg_jax.inference import evaluate
from vgg_jax.inference.explain import METHODS, Explainer, check_layer, overlay


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("checkpoint", None, "A training workdir or convert --out.")
    flags.DEFINE_list("method", ["gradcam"], f"One or more of {', '.join(METHODS)}.")
    flags.DEFINE_string("layer", None, "Grad-CAM's layer (default: the last convolution).")
    flags.DEFINE_integer("class", None, "Class to explain (default: each image's top-1).")
    flags.DEFINE_string("out", None, "Folder for the PNGs and .npy maps.")
    flags.DEFINE_bool("ema", True, cli.EMA_FLAG_HELP)
    flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv: Sequence[str]) -> int:
    """CLI: ``python -m vgg_jax.explain --checkpoint CKPT IMAGE... --method M --out DIR``."""
    from absl import flags
    from PIL import Image

    from vgg_jax.inference.predict import class_names, rescaled
    f = flags.FLAGS
    if len(argv) < 2:
        raise UserError("give one or more image files after the flags.")
    bad = [m for m in f.method if m not in METHODS]
    if bad:
        raise UserError(f"unknown --method {', '.join(bad)}: use one of {', '.join(METHODS)}.")
    record = evaluate.read_record(f.checkpoint)
    if not record.include_top:
        raise UserError(f"{f.checkpoint} holds a net without its classifier: no class to "
                        f"explain.")
    if f.layer:
        check_layer(record.arch, f.layer)
    klass = getattr(f, "class")
    if klass is not None and not 0 <= klass < record.num_classes:
        raise UserError(f"--class {klass} is not a class of this net (0..{record.num_classes - 1}).")
    images, failed = [], 0
    for path in argv[1:]:
        try:
            images.append((path, rescaled(path, [record.eval_scale])[record.eval_scale]))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if not images:
        return 1
    os.makedirs(f.out, exist_ok=True)
    names = class_names(record)
    explainer = Explainer.of(evaluate.Net.load(f.checkpoint, f.ema))
    crop = record.image_size
    for path, full in images:
        top, left = (full.shape[0] - crop) // 2, (full.shape[1] - crop) // 2
        centre = full[top:top + crop, left:left + crop]
        stem = os.path.splitext(os.path.basename(path))[0]
        predicted = int(explainer.predicted(centre[None])[0])
        shown = klass if klass is not None else predicted
        print(f"{path}: predicted {names[predicted]!r}; explaining {names[shown]!r}")
        for method in f.method:
            photo = full if method == "scoremap" else centre
            heat = np.asarray(explainer.explain(method, photo[None].astype(np.float32),
                                                shown, f.layer))[0]
            base = os.path.join(f.out, f"{stem}_{method}")
            np.save(base + ".npy", heat)
            shown_photo = np.clip(np.round(photo), 0, 255).astype(np.uint8)
            Image.fromarray(overlay(shown_photo, heat)).save(base + ".png")
            print(f"  {method}: {base}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main, define_flags)

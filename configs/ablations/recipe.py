"""Recipes: what the training tricks of the decade after the paper buy a VGG (A on CIFAR-10).

The base of the other studies (configuration A at a quarter width, 32x32 crops, SGD with
momentum 0.9, weight decay 5e-4, dropout, a cosine schedule with one epoch of warmup, 12
epochs), then one ingredient at a time: label smoothing 0.1; mixup (alpha 0.8) or CutMix
(alpha 1.0), one of the two per batch (timm's DeiT recipe); RandAugment N=2, M=9; an EMA of
the weights (decay 0.999, about 2.5 epochs); all four together; and all four with AdamW
(learning rate 1e-3, decoupled weight decay 0.05 on the kernels) in place of SGD. The EMA
runs also report the EMA weights' error. Seed 0 of every setting first, then seed 1.

    python -m vgg_jax.sweep --config=configs/ablations/recipe.py --workdir=runs/recipe \
        --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar

SMOOTHING = {"label_smoothing": 0.1}
MIXING = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mix_switch_prob": 0.5}
RANDAUGMENT = {"randaugment_ops": 2, "randaugment_magnitude": 9.0}
EMA = {"ema_decay": 0.999}
ALL = {**SMOOTHING, **MIXING, **RANDAUGMENT, **EMA}
ADAMW = {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 0.05}

SETTINGS = (  # (label, run folder, overrides)
    ("paper", "paper", {}),
    ("+ label smoothing", "smoothing", SMOOTHING),
    ("+ mixup/CutMix", "mixing", MIXING),
    ("+ RandAugment", "randaugment", RANDAUGMENT),
    ("+ EMA", "ema", EMA),
    ("all four", "all", ALL),
    ("all four, AdamW", "all-adamw", {**ALL, **ADAMW}),
)


def get_config():
    return cifar.get_config()


def get_sweep():
    return [{"label": label, "name": name, **overrides, "seed": seed}
            for seed in (0, 1) for label, name, overrides in SETTINGS]

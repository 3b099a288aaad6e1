"""Depth: configurations A, B, C, D and E (Table 3's rows) at a quarter width on CIFAR-10.

python -m vgg_jax.sweep --config=configs/ablations/depth.py --workdir=runs/depth \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar

SEEDS = (0,)
NETS = (("A (11)", "vgg11"), ("B (13)", "vgg13"), ("C (16, 1x1)", "vgg16_conv1"),
        ("D (16)", "vgg16"), ("E (19)", "vgg19"))


def get_config():
    return cifar.get_config()


def get_sweep():
    return cifar.arch_runs(NETS, SEEDS)

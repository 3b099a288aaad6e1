"""Depth: configurations A, B, C, D and E (Table 3's rows) at a quarter width on CIFAR-10.

Two seeds of A to D (A and B differ by less than a seed's spread); E, which does not leave
chance level from Glorot's initialisation, once. The second seeds of A, C and D are the same
runs as in the lrn and conv1x1 studies (copy them in to skip them).

python -m vgg_jax.sweep --config=configs/ablations/depth.py --workdir=runs/depth \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar

NETS = (("A (11)", "vgg11"), ("B (13)", "vgg13"), ("C (16, 1x1)", "vgg16_conv1"),
        ("D (16)", "vgg16"), ("E (19)", "vgg19"))


def get_config():
    return cifar.get_config()


def get_sweep():
    return cifar.arch_runs(NETS[:4], seeds=(0, 1)) + cifar.arch_runs(NETS[4:], seeds=(0,))

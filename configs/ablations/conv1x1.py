"""1x1 against 3x3: configuration C (1x1 third layers) against D (3x3), two seeds.

python -m vgg_jax.sweep --config=configs/ablations/conv1x1.py --workdir=runs/conv1x1 \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    return cifar.arch_runs((("C (1x1)", "vgg16_conv1"), ("D (3x3)", "vgg16")), seeds=(0, 1))

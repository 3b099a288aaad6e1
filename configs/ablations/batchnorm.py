"""BatchNorm: configurations A and D with and without it (not in the paper, which predates it).

python -m vgg_jax.sweep --config=configs/ablations/batchnorm.py --workdir=runs/batchnorm \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    return cifar.arch_runs((("A", "vgg11"), ("A-BN", "vgg11_bn"), ("D", "vgg16"),
                            ("D-BN", "vgg16_bn")))

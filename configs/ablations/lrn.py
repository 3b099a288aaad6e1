"""Local response normalisation: A against A-LRN (Table 3, rows A and A-LRN), two seeds.

python -m vgg_jax.sweep --config=configs/ablations/lrn.py --workdir=runs/lrn \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    return cifar.arch_runs((("A", "vgg11"), ("A-LRN", "vgg11_lrn")), seeds=(0, 1))

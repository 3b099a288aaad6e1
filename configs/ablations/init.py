"""Initialisation of configuration D: Glorot, the paper's N(0, 0.01), and A-to-D transfer.

The paper trained A from N(0, 0.01) and started deeper nets from A's first four convolutions
and three FC layers (section 3.1), noting later that Glorot's initialisation works without
that. The first run trains A (the source of the transfer run, in this sweep's folder).

python -m vgg_jax.sweep --config=configs/ablations/init.py --workdir=runs/init \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    return [
        {"label": "A, N(0, 0.01)", "name": "A-normal", "arch": "vgg11", "initializer": "normal"},
        {"label": "D, Glorot", "arch": "vgg16", "initializer": "glorot"},
        {"label": "D, N(0, 0.01)", "arch": "vgg16", "initializer": "normal"},
        {"label": "D from A", "arch": "vgg16", "initializer": "normal",
         "init_from": "{workdir}/A-normal"},
    ]

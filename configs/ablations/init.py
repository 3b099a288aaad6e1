"""Initialisation: the paper's N(0, 0.01), Glorot, and A-to-deeper transfer (section 3.1).

The paper trained A from N(0, 0.01) and started the deeper nets from A's first four
convolutions and three FC layers, the other layers drawn from N(0, 0.01) (section 3.1); it
notes that Glorot's initialisation, found after submission, trains them without that. Here:
A from either initialisation; D and E from Glorot; and D and E started from the Glorot-trained
A (its conv1_1, conv2_1, conv3_1, conv3_2, fc6-fc8), the other layers Glorot (and, for D,
N(0, 0.01) as in the paper). "A, Glorot", "D, Glorot" and "E, Glorot" are the depth study's
runs (the same config and seed): copy those folders in under these names to skip them.

python -m vgg_jax.sweep --config=configs/ablations/init.py --workdir=runs/init \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    from_a = "{workdir}/A-glorot"
    return [
        {"label": "A, N(0, 0.01)", "name": "A-normal", "arch": "vgg11", "initializer": "normal"},
        {"label": "A, Glorot", "name": "A-glorot", "arch": "vgg11", "initializer": "glorot"},
        {"label": "D, Glorot", "arch": "vgg16", "initializer": "glorot"},
        {"label": "D from A", "name": "D-from-A", "arch": "vgg16", "initializer": "glorot",
         "init_from": from_a},
        {"label": "E, Glorot", "arch": "vgg19", "initializer": "glorot"},
        {"label": "E from A", "name": "E-from-A", "arch": "vgg19", "initializer": "glorot",
         "init_from": from_a},
        {"label": "D from A, rest N(0, 0.01)", "name": "D-from-A-normal", "arch": "vgg16",
         "initializer": "normal", "init_from": from_a},
    ]

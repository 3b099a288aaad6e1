"""Configuration B of Table 1 (vgg13), trained with the paper's recipe (configs/default.py).

BatchNorm variant: `--config.arch=vgg13_bn` (as torchvision ships it).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg13"
    return config

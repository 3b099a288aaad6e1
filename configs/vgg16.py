"""Configuration D of Table 1 (vgg16), trained with the paper's recipe (configs/default.py).

BatchNorm variant: `--config.arch=vgg16_bn` (as torchvision ships it).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg16"
    return config

"""Configuration E of Table 1 (vgg19), trained with the paper's recipe (configs/default.py).

BatchNorm variant: `--config.arch=vgg19_bn` (as torchvision ships it).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg19"
    return config

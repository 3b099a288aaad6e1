"""Configuration A of Table 1 (vgg11), trained with the paper's recipe (configs/default.py).

BatchNorm variant: `--config.arch=vgg11_bn` (as torchvision ships it).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg11"
    return config

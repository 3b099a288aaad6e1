"""Configuration C of Table 1 (vgg16_conv1), trained with the paper's recipe (configs/default.py).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg16_conv1"
    return config

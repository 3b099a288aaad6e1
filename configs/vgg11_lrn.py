"""Configuration A-LRN of Table 1 (vgg11_lrn), trained with the paper's recipe (configs/default.py).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg11_lrn"
    return config

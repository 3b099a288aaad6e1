"""The net whose explanations are worth looking at: the quickstart's VGG-11 with BatchNorm on
``vgg_shapes``, at the images' own 64x64 (so conv5 maps are 4x4, fine enough for Grad-CAM
to point at a shape), an eighth of the width and AdamW, which leaves SGD's plateau behind.

``python -m vgg_jax.main --config=configs/explain.py --workdir=/tmp/explain`` trains it
(12 epochs, about 2 minutes on 2 CPU cores); ``notebooks/explain.ipynb`` and
``tests/test_explain.py`` (4 epochs: 95% of the first 40 validation images, 82.6% of all
2,000) look into it.
"""

from configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.width = 0.125           # 8-16-32-64-64 channels
    config.fc_width = 128
    config.image_size = 64
    config.train_scale_min = 64    # S jittered in [64, 72]
    config.train_scale_max = 72
    config.eval_scale = 64         # the whole image
    config.optimizer = "adamw"
    config.learning_rate = 0.002
    config.weight_decay = 1e-4
    config.warmup_epochs = 0.3
    config.dropout_rate = 0.0
    config.num_epochs = 12
    return config

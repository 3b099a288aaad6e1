"""A narrow VGG-11 with BatchNorm on the built-in ``vgg_shapes`` data set: minutes on a CPU.

``python -m vgg_jax.main --config=configs/quickstart.py --workdir=/tmp/quickstart``
builds the data set on first use (12,000 64x64 JPEGs, about 10 s) and trains at 32x32.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.arch = "vgg11_bn"
    config.width = 0.25          # 16-32-64-128-128 channels
    config.fc_width = 256
    config.num_classes = 10
    config.dataset = "vgg_shapes"
    config.image_size = 32
    config.train_scale_min = 32  # S jittered in [32, 40] per image
    config.train_scale_max = 40
    config.eval_scale = 36
    config.std_rgb = (58.393, 57.12, 57.375)
    config.pca_std = 0.0         # the shapes' colours are random already
    config.cache = True
    config.shuffle_buffer = 0
    config.batch_size = 64
    config.learning_rate = 0.05
    config.schedule = "cosine"
    config.warmup_epochs = 0.5
    config.num_epochs = 20
    config.dropout_rate = 0.25
    config.eval_every_epochs = 4
    config.checkpoint_every_epochs = 4
    config.log_every_steps = 100
    return config

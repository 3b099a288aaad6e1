"""A narrow VGG-11 with BatchNorm on CIFAR-10 as JPEG files (image-folder layout).

python -m vgg_jax.main --config=configs/cifar10.py --workdir=runs/cifar10 \
    --config.dataset=imagefolder:/path/to/cifar10

(``cifar10/{train,test}/<class>/*.jpg``.) Scale jittering S in [32, 40] with 32x32 crops
plays the role of the usual pad-and-crop augmentation.
"""

from configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.dataset = "imagefolder:cifar10"
    config.eval_split = "test"
    config.mean_rgb = (125.3, 123.0, 113.9)
    config.std_rgb = (63.0, 62.1, 66.7)
    config.batch_size = 128
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.dropout_rate = 0.25
    config.warmup_epochs = 1.0
    config.num_epochs = 40
    config.eval_every_epochs = 5
    config.checkpoint_every_epochs = 5
    return config

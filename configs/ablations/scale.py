"""Training scale: fixed S against scale jittering (Table 3's S = 256, 384, [256; 512]).

CIFAR-10's 32x32 images scaled so that the smallest side is S, 32x32 crops: fixed S = 32
(no crop augmentation), fixed S = 40, and S jittered in [32, 40] (the setting every other
study uses) and in [32, 48]; tested at Q = 36 with configuration A (the best-trained plain
net at 12 epochs, and the quickest), one seed.

python -m vgg_jax.sweep --config=configs/ablations/scale.py --workdir=runs/scale \
    --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar

SCALES = (("S=32", 32, 32), ("S=40", 40, 40), ("S in [32, 40]", 32, 40),
          ("S in [32, 48]", 32, 48))


def get_config():
    config = cifar.get_config()
    config.arch = "vgg11"
    config.eval_scale = 36
    return config


def get_sweep():
    return [{"label": label, "train_scale_min": lo, "train_scale_max": hi, "seed": seed}
            for label, lo, hi in SCALES for seed in (0,)]

"""The training setup every ablation study starts from: narrow Table 1 nets on CIFAR-10.

Not a study itself (it defines no sweep). The nets keep the paper's design (no BatchNorm,
Glorot initialisation, dropout, SGD with momentum and weight decay 5e-4) at a quarter of
the width (16-32-64-128-128 channels, fc6/fc7 of 256) and 32x32 crops, so that one run takes
minutes on a CPU. Point ``--config.dataset`` at the unpacked CIFAR-10 JPEGs
(``tar xzf ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz -C /tmp/vgg_cifar10``).
"""

from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.arch = "vgg11"
    config.initializer = "auto"      # Glorot without BatchNorm
    config.learning_rate = 0.03
    config.schedule = "cosine"
    config.warmup_epochs = 1.0
    config.num_epochs = 12
    config.eval_every_epochs = 1000  # once, at the end
    config.checkpoint_every_epochs = 1
    config.log_every_steps = 100
    return config


def arch_runs(nets, seeds=(0,)):
    """Sweep runs comparing architectures: one per (label, arch) pair and seed."""
    return [{"label": label, "arch": arch, "seed": seed} for label, arch in nets
            for seed in seeds]

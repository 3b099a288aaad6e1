"""Kernels: stacks of 3x3 convolutions against single large kernels (sections 2.3 and 4.1).

The paper's test (section 4.1): B against a shallow net with each pair of 3x3 convolutions
replaced by one 5x5 (B-5x5, ``vgg13_5x5``), whose top-1 error was 7% higher. Here also the
control that separates the two reasons section 2.3 gives, B-5x5 with a 1x1 convolution +
ReLU after each 5x5 (``vgg13_5x5_relu``: B's number of non-linearities, B-5x5's receptive
fields and nearly its weights), and D against D-7x7 (``vgg16_7x7``: 5x5 in blocks 1-2, 7x7
in blocks 3-5). CIFAR-10 upscaled to 64x64, so that block 5 still sees 4x4 maps (a 32x32
image leaves it 2x2, where a 5x5 kernel is mostly padding): crops of 64, S jittered in
[64, 80], Q = 72. Quarter width and the base recipe of the other studies, 8 epochs (to fit
about two hours on 2 CPU cores); two seeds of B, B-5x5 and the control, one of D and D-7x7.

    python -m vgg_jax.sweep --config=configs/ablations/kernel.py --workdir=runs/kernel \
        --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar

NETS = (("B", "vgg13"), ("B-5x5", "vgg13_5x5"), ("B-5x5+1x1", "vgg13_5x5_relu"))
DEEP = (("D", "vgg16"), ("D-7x7", "vgg16_7x7"))


def get_config():
    config = cifar.get_config()
    config.image_size = 64
    config.train_scale_min = 64
    config.train_scale_max = 80
    config.eval_scale = 72
    config.num_epochs = 8
    return config


def get_sweep():
    # The paper's comparison first, seed by seed, so that partial results already answer it.
    return [run for seed in (0, 1) for run in cifar.arch_runs(NETS, seeds=(seed,))] + \
        cifar.arch_runs(DEEP, seeds=(0,))

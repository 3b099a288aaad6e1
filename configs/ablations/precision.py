"""Precision: does training in bfloat16 (float32 weights, bfloat16 activations and
convolutions: oneDNN's AVX-512 BF16 / AMX kernels on CPU) cost accuracy? A in float32 and
in bfloat16 on CIFAR-10, two seeds each, otherwise the base setup of every study.

    python -m vgg_jax.sweep --config=configs/ablations/precision.py --workdir=runs/precision \\
        --config.dataset=imagefolder:/tmp/vgg_cifar10/cifar10
"""

from configs.ablations import cifar


def get_config():
    return cifar.get_config()


def get_sweep():
    return [{"label": label, "name": name, "dtype": dtype, "seed": seed}
            for seed in (0, 1)
            for label, name, dtype in (("float32", "float32", "float32"),
                                       ("bfloat16", "bfloat16", "bfloat16"))]

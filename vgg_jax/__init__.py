"""vgg_jax: VGGNet (Simonyan & Zisserman, 2015) in JAX and Flax."""

__version__ = "0.1.0"

"""C++ sources of vgg_jax's CPU kernels and their build (``build.py``)."""

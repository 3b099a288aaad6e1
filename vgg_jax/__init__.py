"""vgg_jax: VGGNet (Simonyan & Zisserman, 2015) in JAX and Flax.

The folders: ``models`` (Table 1 and the network), ``data`` (input pipelines), ``training``
(the loop, its steps, optimiser and config schema), ``store`` (checkpoints, records, weight
import), ``inference`` (evaluation protocols, prediction, explanation, export), ``parallel``
(multi-host set-up, sharding, preemption) and ``compute`` (how each platform computes the
layers). The modules at this level are the commands: ``python -m vgg_jax.main`` and others.
"""

from vgg_jax.compute import process as _process

__version__ = "0.1.0"

# XLA reads its CPU flags once, when its backend starts, which may be the caller's next JAX
# call: so they are set here, on import (never overriding the caller's).
MALLOC_TUNED = _process.configure()

"""Where arrays live: batches split over this process's devices, state replicated on all.

The one place that builds meshes and shardings, for the input pipeline (batches ahead of the
step), evaluation (a net's variables on every local device), checkpoints (the state orbax
writes once for all processes) and the benchmarks.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

BATCH_AXIS = "batch"


def local_batch_sharding() -> jax.sharding.NamedSharding:
    """Splits an array's first axis over this process's devices (what ``jax.pmap`` consumes)."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))


def local_replicated_sharding() -> jax.sharding.NamedSharding:
    """A whole copy of an array on each of this process's devices."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def to_local_devices(tree: Any) -> Any:
    """Puts every array of ``tree`` split over the local devices along its first axis."""
    return jax.device_put(tree, local_batch_sharding())


def replicated(tree: Any) -> Any:
    """``tree`` as arrays replicated over every device of every process.

    What ``jax.pmap(..., in_axes=None)`` consumes without resharding, and what orbax saves
    once for all processes. Every process must pass the same values.
    """
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("all",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)

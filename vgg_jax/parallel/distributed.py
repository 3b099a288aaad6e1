"""Multi-process runs: ``jax.distributed`` set up from the config, the environment or the cluster.

Where the coordinator comes from, first match wins:
1. the config: ``coordinator_address`` (``host:port`` of process 0), ``num_processes``,
   ``process_id``;
2. the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
3. the cluster, detected by JAX itself: TPU pod slices (one process per host), SLURM
   (``srun`` with more than one task) and Open MPI (``mpirun``).
Otherwise the run is a single process. Must run before anything touches a JAX device.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

import jax
import ml_collections

from vgg_jax.errors import UserError


def _cluster_detected(environ: Mapping[str, str]) -> bool:
    if int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return True
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return "," in environ.get("TPU_WORKER_HOSTNAMES", "")  # a multi-host TPU slice


def cluster_args(config: ml_collections.ConfigDict,
                 environ: Mapping[str, str] = os.environ) -> Optional[dict]:
    """The ``jax.distributed.initialize`` arguments for this run, or None for one process."""
    address = config.get("coordinator_address") or environ.get("JAX_COORDINATOR_ADDRESS", "")
    if address:
        try:
            count = int(config.get("num_processes") or environ.get("JAX_NUM_PROCESSES", 0))
            index = config.get("process_id", -1)
            index = int(index if index >= 0 else environ.get("JAX_PROCESS_ID", -1))
        except ValueError as e:
            raise UserError(f"Bad process count or id: {e}.") from None
        if count < 1 or not 0 <= index < count:
            raise UserError(f"A coordinator address needs num_processes >= 1 and 0 <= "
                            f"process_id < num_processes; got {count} and {index}.")
        return {"coordinator_address": address, "num_processes": count, "process_id": index}
    if _cluster_detected(environ):
        return {}
    return None


def initialize(config: ml_collections.ConfigDict) -> None:
    """Joins the other processes of a multi-process run (no-op for a single process)."""
    args = cluster_args(config)
    if args is None:
        return
    # Collectives between CPU processes (tests, CPU clusters); accelerators use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)

"""SIGTERM-driven preemption: finish the current step, checkpoint, stop; all processes agree.

Schedulers (SLURM, Kubernetes, TPU maintenance, spot VMs) send SIGTERM some seconds before
they kill a job. ``Watcher`` records the signal instead of dying; the trainer asks it after
every step whether to stop.

- One process: a Python signal handler sets a flag.
- Several processes: JAX's preemption sync manager (``jax.distributed`` starts it) catches
  SIGTERM in each process and agrees on a step through the coordination service: the largest
  step any process has reported, plus one. ``stop_requested(step)`` is True at that step on
  every process, so all of them write the same checkpoint. Asking costs no collective and no
  device transfer: the host keeps dispatching steps ahead of the devices.
"""

from __future__ import annotations

import signal
import threading

import jax
from absl import logging
from jax._src import distributed as _distributed  # the sync manager has no public getter
from jax.experimental import multihost_utils


class Watcher:
    """Catches SIGTERM while active (a context manager); ``stop_requested`` polls it."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = signals
        self._flag = threading.Event()
        self._previous = {}
        self._synced = False

    def __enter__(self) -> "Watcher":
        if jax.process_count() > 1:
            # JAX's own SIGTERM notifier is in place: a Python handler would replace it.
            self._synced = _distributed.global_state.preemption_sync_manager is not None
            if not self._synced:
                logging.warning("The JAX preemption service is off "
                                "(jax_enable_preemption_service): SIGTERM ends the run "
                                "without a checkpoint.")
        elif threading.current_thread() is threading.main_thread():  # handlers live there
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self._flag.set()

    def stop_requested(self, step: int) -> bool:
        """True at the step where every process stops (call it after every step, in order)."""
        if self._synced:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag.is_set()

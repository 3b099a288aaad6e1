"""SIGTERM-driven preemption: finish the current step, checkpoint, stop; all processes agree.

Schedulers (SLURM, Kubernetes, TPU maintenance, spot VMs) send SIGTERM some seconds before
they kill a job. ``Watcher`` records the signal instead of dying; the trainer asks it after
every step whether to stop. With several processes the answer is agreed on (any process
signalled means all stop at the same step), so every process joins the last checkpoint.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np


class Watcher:
    """Catches SIGTERM while active (a context manager); ``stop_requested`` polls it."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = signals
        self._flag = threading.Event()
        self._previous = {}

    def __enter__(self) -> "Watcher":
        if threading.current_thread() is threading.main_thread():  # handlers live there only
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

    def stop_requested(self) -> bool:
        """True once any process has been signalled (a collective with several processes)."""
        local = self._flag.is_set()
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils
        return bool(np.max(multihost_utils.process_allgather(np.int32(local))))

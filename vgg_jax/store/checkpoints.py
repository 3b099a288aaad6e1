"""Orbax checkpoints of a run: ``workdir/checkpoints/<step>/{state,meta}``.

``state`` is the whole train state (step, parameters, BatchNorm statistics, optimiser and
schedule state); ``meta`` is the JSON of the model's ``ModelRecord`` (architecture, width, classes,
preprocessing), read to check compatibility before anything is restored or compiled.
The last ``keep`` checkpoints are kept, and the one with the best validation top-1.
Saving is asynchronous; ``wait`` blocks until the last save is on disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as cm

from vgg_jax.parallel import sharding
from vgg_jax.errors import CheckpointError, UserError
from vgg_jax.store.record import ModelRecord

BEST_METRIC = "eval_top1"
_OPEN_ATTEMPTS = 5


class StructureMismatch(CheckpointError):
    """A checkpoint whose train state has other fields than the run's (not damage)."""


def checkpoint_dir(path: str) -> str:
    """The ``checkpoints`` folder of a workdir, or ``path`` itself if it is one."""
    sub = os.path.join(path, "checkpoints")
    return sub if os.path.isdir(sub) else path


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, directory: str, keep: int = 3, read_only: bool = False,
                 asynchronous: bool = True):
        policy = cm.AnyPreservationPolicy([
            cm.LatestN(keep),
            # Sorted ascending, BestN keeps the last n: the highest top-1.
            cm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                     keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=not read_only, read_only=read_only,
            enable_async_checkpointing=asynchronous and not read_only)
        self.directory = os.path.abspath(directory)
        self._read_only = read_only
        self._saving: Optional[int] = None
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self.manager = ocp.CheckpointManager(
                    self.directory, options=options,
                    item_handlers={"state": ocp.StandardCheckpointHandler(),
                                   "meta": ocp.JsonCheckpointHandler()})
                break
            except FileNotFoundError:
                # A running job deleted an old step between orbax's listing and its stat of
                # that step (a reader watching a live run); the next listing no longer has it.
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)

    def latest_step(self) -> Optional[int]:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, record: ModelRecord,
             metrics: Optional[dict] = None) -> None:
        """Starts an asynchronous save of ``state`` and ``record`` at ``step``.

        With several processes every one of them calls this; the replicated state (as
        ``jax.pmap`` returns it, local to each process) is written once.
        """
        if jax.process_count() > 1:
            state = sharding.replicated(state)
        self.wait()  # reports a failure of the previous asynchronous save
        self._saving = step
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record.to_meta())),
                metrics=metrics, force=True)
        except Exception as e:
            raise self._save_failed(e) from e

    def record(self, step: Optional[int] = None) -> ModelRecord:
        """The model record saved with ``step`` (default: the latest)."""
        step = self.latest_step() if step is None else step
        return ModelRecord.from_meta(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])

    def newest_record(self) -> Optional[tuple[int, ModelRecord]]:
        """(step, record) of the newest checkpoint whose metadata reads; None if there is none.

        Checkpoints whose metadata cannot be read are set aside (see ``_set_aside``).
        """
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return step, self.record(step)
            except Exception as e:  # orbax raises many types for damaged files
                self._set_aside(step, e)
        return None

    def restore_newest(self, target: Any) -> tuple[Any, int]:
        """(state, step) from the newest checkpoint that restores, into ``target``'s structure.

        A checkpoint that fails to restore (truncated or missing files) is set aside with a
        warning and the one before it is tried; (``target``, 0) if none restores.
        """
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return self.restore(target, step), step
            except StructureMismatch:
                raise
            except Exception as e:
                self._set_aside(step, e)
        return target, 0

    def _set_aside(self, step: int, error: Exception) -> None:
        """Renames an unreadable checkpoint ``<step>`` to ``<step>.unreadable``, never deleting it."""
        path = os.path.join(self.directory, str(step))
        logging.warning("Checkpoint %s cannot be read (%s: %s); falling back to an older one%s.",
                        path, type(error).__name__, str(error).split("\n")[0][:200],
                        "" if self._read_only else f" and keeping it as {path}.unreadable")
        if self._read_only:  # a reader never moves a run's files
            return
        if jax.process_index() == 0 and os.path.isdir(path):
            os.replace(path, f"{path}.unreadable.{int(time.time())}" if os.path.exists(
                f"{path}.unreadable") else f"{path}.unreadable")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()

    def restore(self, target: Any, step: Optional[int] = None) -> Any:
        """Restores the state at ``step`` (default: latest) into ``target``'s structure.

        Fields of a dataclass ``target`` that are empty there (an ``ema`` of a run without
        EMA) may be absent from the checkpoint: checkpoints written before such a field
        existed restore. Any other difference raises ``StructureMismatch``.
        """
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        saved = set(self.manager.item_metadata(step)["state"].keys())
        if dataclasses.is_dataclass(target):
            fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(target)}
            absent = {k for k, v in fields.items()
                      if k not in saved and not jax.tree_util.tree_leaves(v)}
            if set(fields) - absent != saved:
                raise StructureMismatch(
                    f"The checkpoint of step {step} in {self.directory} holds "
                    f"{', '.join(sorted(saved))} but this run needs "
                    f"{', '.join(sorted(set(fields) - absent))} (another config, e.g. "
                    f"ema_decay on or off): use another workdir or the run's own config.")
            restored = self._restore_state(step, {k: v for k, v in fields.items()
                                                  if k not in absent})
            return target.replace(**restored)
        return self._restore_state(step, abstract)

    def _restore_state(self, step: int, abstract: Any) -> Any:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except ValueError as e:
            if "structures do not match" not in str(e):
                raise
            raise StructureMismatch(
                f"The checkpoint of step {step} in {self.directory} holds a train state of "
                f"another shape than this run's (another config, e.g. ema_decay on or off): "
                f"use another workdir or the run's own config.") from None

    def restore_raw(self, step: Optional[int] = None) -> dict:
        """The saved state as a nested dict of arrays on this process's first device.

        Works whatever the device topology the checkpoint was written on.
        """
        step = self.latest_step() if step is None else step
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            self.manager.item_metadata(step)["state"])
        return self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]

    def param_shapes(self, step: Optional[int] = None) -> dict:
        """{layer: {name: shape}} of the saved parameters, read from metadata only."""
        step = self.latest_step() if step is None else step
        tree = self.manager.item_metadata(step)["state"]
        return jax.tree_util.tree_map(lambda m: tuple(m.shape), dict(tree["params"]))

    def wait(self) -> None:
        """Blocks until the last save is on disk; ``CheckpointError`` if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(e) from e

    def _save_failed(self, error: Exception) -> CheckpointError:
        self.manager.reload()
        intact = self.manager.latest_step()
        kept = f"step {intact} is intact" if intact is not None else "no checkpoint was written"
        return CheckpointError(
            f"Saving the checkpoint of step {self._saving} into {self.directory} failed "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]}); {kept}. "
            f"Free disk space or fix permissions, then rerun to resume.")

    def close(self) -> None:
        self.manager.close()


def model_variables(raw: dict, ema: bool = True) -> dict:
    """The model variables (``params``, ``batch_stats``) of a restored state (``restore_raw``).

    A state trained with ``ema_decay`` holds moving averages of the weights too: they are
    taken unless ``ema`` is False.
    """
    source = raw["ema"] if ema and raw.get("ema") else raw
    variables = {"params": source["params"]}
    if source.get("batch_stats"):
        variables["batch_stats"] = source["batch_stats"]
    return variables


def load_latest(path: str, ema: bool = True) -> tuple[ModelRecord, dict]:
    """The record and model variables of the latest checkpoint under ``path`` (a workdir,
    its checkpoints folder or a ``convert --out``); EMA weights unless ``ema`` is False."""
    store = open_read_only(path)
    try:
        return store.record(), model_variables(store.restore_raw(), ema)
    finally:
        store.close()


def open_read_only(path: str, what: str = "") -> Checkpoints:
    """The checkpoints of a workdir (or its ``checkpoints`` folder), read-only.

    Raises ``UserError`` if there is none; ``what`` names the path in the message
    (default: "the checkpoint path").
    """
    where = checkpoint_dir(path)
    store = Checkpoints(where, read_only=True) if os.path.isdir(where) else None
    if store is None or store.latest_step() is None:
        raise UserError(f"No checkpoint in {what or 'the checkpoint path'} {path!r}: pass a "
                        f"training workdir, its checkpoints folder or a convert --out.")
    return store

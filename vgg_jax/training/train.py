"""Training: ``train_and_evaluate``, the host loop around the pmap-ed steps of ``vgg_jax.training.steps``.

The loop only dispatches on steps that neither log, evaluate nor save: nothing is copied
from the devices and nothing waits for them (preemption is agreed on without a collective,
see ``vgg_jax.parallel.preemption``), so the host runs ahead and the devices never idle between
steps. The config's ``transfer_guard`` is the ``jax.transfer_guard_device_to_host`` level on
those steps: "allow" by default; "disallow" makes any copy there an error on GPU and TPU
(JAX's CPU backend does not guard device-to-host copies; the tests count them instead).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from vgg_jax.store import checkpoints, transfer
from vgg_jax import models
from vgg_jax.training import durations, optim, schema, steps
from vgg_jax.parallel import preemption
from vgg_jax.data import pipeline, sources
from vgg_jax.errors import NonFiniteError, Preempted, UserError
from vgg_jax.store.record import ModelRecord, module_options

def frozen_layers(pattern: str, layers) -> frozenset:
    """The layers whose names fully match the ``freeze`` regex (none if empty)."""
    if not pattern:
        return frozenset()
    frozen = frozenset(name for name in layers if re.fullmatch(pattern, name))
    if not frozen:
        raise UserError(f"freeze {pattern!r} matches no layer; the layers are "
                        f"{', '.join(layers)}.")
    return frozen


def _validate(config: ml_collections.ConfigDict, model: models.VGG) -> tuple[dict, frozenset]:
    """The checks that need the devices or the model, after ``schema.check``; returns the
    model's variables as shape structures and the frozen layers."""
    devices, processes = jax.device_count(), jax.process_count()
    if config.batch_size % devices:
        raise UserError(f"batch_size {config.batch_size} is not divisible by the "
                        f"{devices} devices: use a multiple of {devices}.")
    per_device = config.batch_size // devices
    if per_device % config.grad_accum_steps:
        raise UserError(f"The {per_device} examples per device do not split into "
                        f"grad_accum_steps {config.grad_accum_steps} micro-batches: make "
                        f"batch_size a multiple of {devices * config.grad_accum_steps}.")
    eval_batch = config.eval_batch_size or config.batch_size
    if eval_batch % devices:
        raise UserError(f"eval_batch_size {eval_batch} is not divisible by the "
                        f"{devices} devices.")
    shards = config.data_shards or processes
    if shards % processes or (config.batch_size // processes) % (shards // processes):
        raise UserError(f"data_shards {shards} must be a multiple of the {processes} "
                        f"processes and divide each process's batch.")
    try:
        abstract = models.abstract_variables(model, config.image_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    return abstract, frozen_layers(config.freeze, list(abstract["params"]))


def _check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise UserError(f"Cannot write to workdir {workdir!r} ({e.strerror}): choose a "
                        f"writable directory.") from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       return_state: bool = False):
    """Trains ``config`` in ``workdir`` (resuming from its checkpoints); returns final metrics.

    With ``return_state``, returns (metrics, final ``TrainState``). ``config`` is read, never
    written. Bad input raises ``vgg_jax.errors.UserError`` (``schema.ConfigError`` for
    fields out of range) before any data is built or code compiled; a non-finite loss
    raises ``NonFiniteError`` and SIGTERM ``Preempted``, each after keeping a good checkpoint.
    """
    schema.check(config)
    config = ml_collections.FrozenConfigDict(config)
    wanted = ModelRecord.from_config(config)
    model = wanted.build(**module_options(config), bn_axis_name=steps.AXIS)
    abstract, frozen = _validate(config, model)
    _check_workdir(workdir)
    builder = sources.get_builder(config.dataset, config.data_dir, config.manual_dir)
    sources.check_splits(builder, [config.train_split, config.eval_split])
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"),
                                    keep=config.keep_checkpoints,
                                    asynchronous=config.async_checkpoints)
    resume, load_init, record = store.newest_record(), None, wanted
    if resume is not None:
        resume[1].check_fits(wanted, f"workdir {workdir!r}")
        record = wanted.with_preprocessing_of(resume[1], workdir)
    elif config.init_from:
        load_init, source = transfer.init_from_params(config.init_from, wanted,
                                                      abstract["params"], config.init_from_ema)
        record = wanted.with_preprocessing_of(source, config.init_from)
    label = builder.info.features["label"] if "label" in builder.info.features else None
    record = record.with_class_names(getattr(label, "names", None))

    sources.prepare(builder, config.manual_dir)
    local_batch = config.batch_size // jax.process_count()
    shards = config.data_shards or jax.process_count()
    steps_per_epoch = pipeline.epoch_steps(builder, config.train_split,
                                           config.batch_size // shards, shards)
    total_steps = durations.total_steps(config, steps_per_epoch)
    schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, schedule, frozen)
    state, rng = steps.initial_state(model, tx, config.image_size, config.seed, load_init,
                                     ema=config.ema_decay > 0)
    if load_init is not None:
        logging.info("Initialised from %s.", config.init_from)
    start_step = 0
    if resume is not None:
        state, start_step = store.restore_newest(state)
        logging.info("Resumed from step %d of %s.", start_step, store.directory)
    place = steps.placer()
    state = place(state)

    data_kw = dict(crop=config.image_size, cache=config.cache)
    p_train, p_eval = steps.pmap_steps(model, tx, schedule, record.mean_rgb, record.std_rgb,
                                       steps.StepOptions.from_config(config, frozen))
    eval_local_batch = (config.eval_batch_size or config.batch_size) // jax.process_count()

    def run_eval(state):
        """eval_* metrics of the trained weights, and eval_ema_* of the EMA weights if any."""
        metrics = {}
        for prefix, weights in [("eval_", state)] + (
                [("eval_ema_", state.ema_state())] if state.ema else []):
            _, batches = pipeline.eval_batches(builder, config.eval_split,
                                               local_batch=eval_local_batch,
                                               scale=config.eval_scale, **data_kw)
            result = steps.evaluate(p_eval, weights, pipeline.prefetch_to_device(batches))
            metrics.update({k.replace("eval_", prefix): v for k, v in result.items()
                            if prefix == "eval_" or k != "eval_count"})
        return metrics

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start_step == 0:
        writer.write_hparams({k: v for k, v in config.to_dict().items()
                              if isinstance(v, (int, float, str, bool))})
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump(config.to_dict(), f, indent=2, default=str)
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
    log_every = config.log_every_steps
    eval_every = durations.every(config, "eval", steps_per_epoch)
    ckpt_every = durations.every(config, "checkpoint", steps_per_epoch)
    logging.info("Training %s for %d steps (%d per epoch), batch %d on %d devices.",
                 record.arch, total_steps, steps_per_epoch, config.batch_size,
                 jax.device_count())

    _, stream = pipeline.train_batches(
        builder, config.train_split, local_batch=local_batch, scale_min=config.train_scale_min,
        scale_max=config.train_scale_max, seed=config.seed, start_step=start_step,
        num_steps=total_steps - start_step, shuffle_buffer=config.shuffle_buffer,
        crop_mode=config.train_crop, pca_std=config.pca_std, num_shards=config.data_shards,
        randaugment=(config.randaugment_ops, config.randaugment_magnitude), **data_kw)
    profiler = Profiler(schema.parse_step_range(config.profile_steps), workdir)
    history, eval_metrics, t0 = [], {}, time.time()
    with stream, preemption.Watcher() as watcher:  # an error abandons the stream
        batches = pipeline.prefetch_to_device(stream)
        for step in range(start_step + 1, total_steps + 1):
            evaluated = step % eval_every == 0 or step == total_steps
            saving = evaluated or step % ckpt_every == 0
            logged = step % log_every == 0 or saving
            guard = "allow" if logged else config.transfer_guard
            with jax.transfer_guard_device_to_host(guard):
                profiler.before(step)
                state, metrics = p_train(state, next(batches), rng)
                profiler.after(step, state)
                history.append(metrics)
                progress(step)
                stop = step < total_steps and watcher.stop_requested(step)
            if logged:  # never evaluate or save a non-finite state
                summary = _summarize(history, step, store, config.skip_nonfinite)
                summary["images_per_sec"] = len(history) * config.batch_size / (time.time() - t0)
                writer.write_scalars(step, summary)
                history, t0 = [], time.time()
            if evaluated:
                eval_metrics = run_eval(state)
                state = state.replace(plateau=place(optim.plateau_update(
                    jax.device_get(state.plateau), eval_metrics["eval_top1"], config)))
                writer.write_scalars(step, eval_metrics)
                t0 = time.time()
            if saving:
                store.save(step, state, record, metrics=eval_metrics if evaluated else None)
            if stop:
                profiler.stop()
                if history:
                    _summarize(history, step, store, config.skip_nonfinite)
                if not saving:
                    store.save(step, state, record)
                store.wait()
                writer.flush()
                raise Preempted(step, store.directory)
    profiler.stop()
    writer.flush()
    if not eval_metrics:  # resumed a finished run: report its final evaluation again
        eval_metrics = run_eval(state)
    store.wait()
    store.close()
    metrics = dict(eval_metrics, step=int(jax.device_get(state.step)))
    return (metrics, state) if return_state else metrics


class Profiler:
    """Traces steps START..END (``profile_steps``) with the JAX profiler into the workdir.

    TensorBoard's profile plugin shows the trace (``tensorboard --logdir WORKDIR``). Only
    process 0 traces; the trace ends once step END has finished on the devices.
    """

    def __init__(self, steps: Optional[tuple[int, int]], workdir: str):
        self._steps = steps if jax.process_index() == 0 else None
        self._workdir, self._tracing = workdir, False

    def before(self, step: int) -> None:
        if self._steps and step == self._steps[0]:
            jax.profiler.start_trace(self._workdir)
            self._tracing = True
            logging.info("Profiling steps %d to %d into %s.", *self._steps, self._workdir)

    def after(self, step: int, state) -> None:
        if self._tracing and step >= self._steps[1]:
            jax.block_until_ready(state)
            self.stop()

    def stop(self) -> None:
        if self._tracing:
            jax.profiler.stop_trace()
            self._tracing = False


def _summarize(history: list[dict], step: int, store: checkpoints.Checkpoints,
               skip_nonfinite: bool) -> dict:
    """Mean training metrics of the steps in ``history`` (the last one is ``step``).

    Raises ``NonFiniteError`` naming the first non-finite step unless such steps are skipped.
    """
    values = jax.device_get(_stack(history))
    finite = values.pop("finite") > 0
    if not finite.all() and not skip_nonfinite:
        bad = step - len(history) + 1 + int(np.argmin(finite))
        store.wait()
        kept = store.latest_step()
        where = (f"the checkpoint of step {kept} in {store.directory} is kept" if kept is not None
                 else "no checkpoint had been written")
        raise NonFiniteError(f"Non-finite loss or gradients at step {bad}; stopped, and {where}. "
                             f"Lower the learning rate, or set skip_nonfinite=True to skip "
                             f"such steps.")
    summary = {f"train_{k}": float(np.mean(v[finite])) if finite.any() else float("nan")
               for k, v in values.items()}
    summary["train_skipped_steps"] = float(np.sum(~finite))
    return summary


def _stack(history: list[dict]) -> dict:
    return {k: jnp.stack([h[k] for h in history]) for k in history[0]}

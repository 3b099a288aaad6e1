"""Training: the train state, the pmap-ed train and eval steps, and ``train_and_evaluate``.

The train state stays unreplicated: ``jax.pmap(..., in_axes=(None, 0, None))`` hands the
same state to every local device and the step returns it with ``out_axes=None``, so nothing
is gathered to the host between steps. Gradients, metrics and BatchNorm statistics are
averaged over the ``batch`` axis, i.e. over all devices of all processes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions

from vgg_jax import checkpoints, models, optim, preemption, transfer
from vgg_jax.data import pipeline, sources
from vgg_jax.errors import NonFiniteError, Preempted, UserError

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: the data position and RNG derive from ``step``."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    plateau: dict


def create_model(config: ml_collections.ConfigDict, **kwargs) -> models.VGG:
    """The ``VGG`` module a config describes."""
    return models.create_model(
        config.arch, num_classes=config.num_classes, width=config.width,
        fc_width=config.fc_width or None, dropout_rate=config.dropout_rate,
        initializer=config.initializer, init_std=config.init_std,
        dtype=jnp.dtype(config.dtype), **kwargs)


def model_meta(config: ml_collections.ConfigDict,
               class_names: Optional[list[str]] = None) -> dict:
    """The JSON description saved with every checkpoint (model, preprocessing, classes)."""
    meta = {"arch": models.canonical_name(config.arch), "width": config.width,
            "fc_width": config.fc_width, "num_classes": config.num_classes,
            "include_top": True, "image_size": config.image_size,
            "mean_rgb": list(config.mean_rgb), "std_rgb": list(config.std_rgb),
            "eval_scale": config.eval_scale, "train_crop": config.train_crop,
            "train_scale": [config.train_scale_min, config.train_scale_max]}
    if class_names and len(class_names) == config.num_classes:
        meta["class_names"] = list(class_names)
    return meta


def frozen_layers(config: ml_collections.ConfigDict, layers) -> frozenset:
    """The layers whose names fully match the ``config.freeze`` regex (none if empty)."""
    if not config.freeze:
        return frozenset()
    try:
        pattern = re.compile(config.freeze)
    except re.error as e:
        raise UserError(f"freeze {config.freeze!r} is not a regular expression ({e}).") from None
    frozen = frozenset(name for name in layers if pattern.fullmatch(name))
    if not frozen:
        raise UserError(f"freeze {config.freeze!r} matches no layer; the layers are "
                        f"{', '.join(layers)}.")
    return frozen


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example softmax cross-entropy in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def topk_correct(scores: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
    """1.0 where ``labels`` is among the ``k`` highest scores.

    Ties are broken by class index, as ``argmax`` and ``top_k`` break them: a class with the
    label's score and a lower index ranks above the label.
    """
    label_score = jnp.take_along_axis(scores, labels[:, None], axis=-1)
    lower = jnp.arange(scores.shape[-1]) < labels[:, None]
    rank = jnp.sum((scores > label_score) | ((scores == label_score) & lower), axis=-1)
    return (rank < k).astype(jnp.float32)


def normalize(batch: dict, mean_rgb, std_rgb) -> jnp.ndarray:
    """uint8 images -> float32 (x + colour shift - mean) / std, mirrored where ``flip``."""
    images = batch["images"].astype(jnp.float32)
    if "flip" in batch:
        images = jnp.where(batch["flip"][:, None, None, None], images[:, :, ::-1], images)
    if "shift" in batch:
        images = images + batch["shift"][:, None, None, :]
    return (images - jnp.asarray(mean_rgb, jnp.float32)) / jnp.asarray(std_rgb, jnp.float32)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: models.VGG,
               tx: optax.GradientTransformation, schedule, mean_rgb, std_rgb,
               frozen: frozenset = frozenset(),
               skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
    """One SGD step on one device's share of the batch (run under ``jax.pmap``).

    ``frozen`` layers keep their BatchNorm statistics too (``tx`` leaves their weights).
    ``metrics["finite"]`` is 0 when the loss or the gradients are NaN or infinite; with
    ``skip_nonfinite`` such a step leaves the weights and optimiser state as they were.
    """
    images = normalize(batch, mean_rgb, std_rgb)
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))

    def loss_fn(params):
        variables = {"params": params, **({"batch_stats": state.batch_stats}
                                          if state.batch_stats else {})}
        logits, new_vars = model.apply(variables, images, train=True,
                                       rngs={"dropout": rng}, mutable=["batch_stats"])
        return cross_entropy(logits, batch["labels"]).mean(), (logits, new_vars)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, new_vars)), grads = grad_fn(state.params)
    grads = jax.lax.pmean(grads, AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * state.plateau["scale"], updates)
    grad_norm = optax.global_norm(grads)
    metrics = jax.lax.pmean({
        "loss": loss,
        "top1": topk_correct(logits, batch["labels"], 1).mean(),
        "top5": topk_correct(logits, batch["labels"], 5).mean(),
        "learning_rate": schedule(state.step) * state.plateau["scale"],
        "grad_norm": grad_norm,
    }, AXIS)
    metrics["finite"] = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)).astype(
        jnp.float32)
    batch_stats = {k: state.batch_stats[k] if k in frozen else v
                   for k, v in new_vars.get("batch_stats", state.batch_stats).items()}
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats)
    if skip_nonfinite:
        keep = metrics["finite"] > 0
        new_state = new_state.replace(**{
            name: jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old),
                                         getattr(new_state, name), getattr(state, name))
            for name in ("params", "opt_state", "batch_stats")})
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, model: models.VGG, mean_rgb,
              std_rgb) -> dict:
    """Masked sums of loss and top-1/top-5 hits over all devices (run under ``jax.pmap``)."""
    variables = {"params": state.params, **({"batch_stats": state.batch_stats}
                                            if state.batch_stats else {})}
    logits = model.apply(variables, normalize(batch, mean_rgb, std_rgb))
    mask = batch["mask"]
    return jax.lax.psum({
        "loss": (cross_entropy(logits, batch["labels"]) * mask).sum(),
        "top1": (topk_correct(logits, batch["labels"], 1) * mask).sum(),
        "top5": (topk_correct(logits, batch["labels"], 5) * mask).sum(),
        "count": mask.sum(),
    }, AXIS)


def evaluate(p_eval_step, state: TrainState, batches) -> dict:
    """Loss, top-1 and top-5 accuracy over every example of an ``eval_batches`` iterator."""
    totals = None
    for batch in batches:
        sums = p_eval_step(state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"eval_loss": float(totals["loss"]) / count, "eval_top1": float(totals["top1"]) / count,
            "eval_top5": float(totals["top5"]) / count, "eval_count": int(count)}


def _validate(config: ml_collections.ConfigDict) -> None:
    """Checks the config before any data or compilation; raises ``UserError``."""
    try:
        config.arch = models.canonical_name(config.arch)
        jnp.dtype(config.dtype)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    if config.schedule not in optim.SCHEDULES:
        raise UserError(f"Unknown schedule {config.schedule!r}; use one of {optim.SCHEDULES}.")
    if config.batch_size % jax.device_count():
        raise UserError(f"batch_size {config.batch_size} is not divisible by the "
                        f"{jax.device_count()} devices: use a multiple of {jax.device_count()}.")
    eval_batch = config.eval_batch_size or config.batch_size
    if eval_batch % jax.device_count():
        raise UserError(f"eval_batch_size {eval_batch} is not divisible by the "
                        f"{jax.device_count()} devices.")
    shards = config.data_shards or jax.process_count()
    if shards % jax.process_count() or (config.batch_size // jax.process_count()) % (
            shards // jax.process_count()):
        raise UserError(f"data_shards {shards} must be a multiple of the {jax.process_count()} "
                        f"processes and divide each process's batch.")
    if not config.image_size <= config.train_scale_min <= config.train_scale_max:
        raise UserError(f"Need image_size <= train_scale_min <= train_scale_max; got "
                        f"{config.image_size}, {config.train_scale_min}, {config.train_scale_max}.")
    if config.train_crop not in ("scale", "inception"):
        raise UserError(f"Unknown train_crop {config.train_crop!r}; use 'scale' or 'inception'.")
    if config.eval_scale < config.image_size:
        raise UserError(f"eval_scale {config.eval_scale} is smaller than the crop "
                        f"image_size {config.image_size}.")
    try:
        abstract = models.abstract_variables(create_model(config), config.image_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    frozen_layers(config, list(abstract["params"]))


def _check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise UserError(f"Cannot write to workdir {workdir!r} ({e.strerror}): choose a "
                        f"writable directory.") from None


def _every(config, name: str, steps_per_epoch: int) -> int:
    steps = config.get(f"{name}_every_steps", 0)
    return steps if steps > 0 else max(1, int(round(config[f"{name}_every_epochs"]
                                                    * steps_per_epoch)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       return_state: bool = False):
    """Trains ``config`` in ``workdir`` (resuming from its checkpoints); returns final metrics.

    With ``return_state``, returns (metrics, final ``TrainState``). Bad input raises
    ``vgg_jax.errors.UserError`` before any data is built or code compiled; a non-finite loss
    raises ``NonFiniteError`` and SIGTERM ``Preempted``, each after keeping a good checkpoint.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    _validate(config)
    _check_workdir(workdir)
    builder = sources.get_builder(config.dataset, config.data_dir, config.manual_dir)
    sources.check_splits(builder, [config.train_split, config.eval_split])
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"),
                                    keep=config.keep_checkpoints,
                                    asynchronous=config.async_checkpoints)
    model = create_model(config, bn_axis_name=AXIS)
    abstract = models.abstract_variables(model, config.image_size)
    resume, load_init = store.newest_meta(), None
    if resume is not None:
        checkpoints.check_same_model(resume[1], model_meta(config), f"workdir {workdir!r}")
        transfer.adopt_preprocessing(config, resume[1], workdir)
    elif config.init_from:
        load_init, init_meta = transfer.init_from_params(config, abstract["params"])
        transfer.adopt_preprocessing(config, init_meta, config.init_from)
    label = builder.info.features["label"] if "label" in builder.info.features else None
    meta = model_meta(config, getattr(label, "names", None))
    frozen = frozen_layers(config, list(abstract["params"]))

    sources.prepare(builder, config.manual_dir)
    local_batch = config.batch_size // jax.process_count()
    shards = config.data_shards or jax.process_count()
    steps_per_epoch = pipeline.epoch_steps(builder, config.train_split,
                                           config.batch_size // shards, shards)
    total_steps = config.num_train_steps or int(math.ceil(config.num_epochs * steps_per_epoch))
    schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
    tx = optim.create_optimizer(config, schedule, frozen)
    state, rng = initial_state(config, model, tx, load_init)
    start_step = 0
    if resume is not None:
        state, start_step = store.restore_newest(state)
        logging.info("Resumed from step %d of %s.", start_step, store.directory)
    # Placed as the train step returns it, so that the step compiles once, not twice.
    identity = jax.pmap(lambda tree, _: tree, axis_name=AXIS, in_axes=(None, 0), out_axes=None)
    place = lambda tree: identity(tree, np.zeros(jax.local_device_count()))  # noqa: E731
    state = place(state)

    norm = dict(mean_rgb=tuple(config.mean_rgb), std_rgb=tuple(config.std_rgb))
    data_kw = dict(crop=config.image_size, cache=config.cache)
    _, train_iter = pipeline.train_batches(
        builder, config.train_split, local_batch=local_batch, scale_min=config.train_scale_min,
        scale_max=config.train_scale_max, seed=config.seed, start_step=start_step,
        shuffle_buffer=config.shuffle_buffer, crop_mode=config.train_crop,
        pca_std=config.pca_std, num_shards=config.data_shards, **data_kw)
    train_iter = pipeline.prefetch_to_device(train_iter)
    p_train = jax.pmap(functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                                         frozen=frozen, skip_nonfinite=config.skip_nonfinite,
                                         **norm),
                       axis_name=AXIS, in_axes=(None, 0, None), out_axes=(None, None),
                       donate_argnums=(0,))
    p_eval = jax.pmap(functools.partial(eval_step, model=model, **norm), axis_name=AXIS,
                      in_axes=(None, 0), out_axes=None)
    eval_local_batch = (config.eval_batch_size or config.batch_size) // jax.process_count()
    eval_data = functools.partial(pipeline.eval_batches, builder, config.eval_split,
                                  local_batch=eval_local_batch, scale=config.eval_scale, **data_kw)

    def run_eval(state):
        return evaluate(p_eval, state, pipeline.prefetch_to_device(eval_data()[1]))

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start_step == 0:
        writer.write_hparams({k: v for k, v in config.to_dict().items()
                              if isinstance(v, (int, float, str, bool))})
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump(config.to_dict(), f, indent=2, default=str)
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
    log_every = config.log_every_steps
    eval_every = _every(config, "eval", steps_per_epoch)
    ckpt_every = _every(config, "checkpoint", steps_per_epoch)
    logging.info("Training %s for %d steps (%d per epoch), batch %d on %d devices.",
                 config.arch, total_steps, steps_per_epoch, config.batch_size, jax.device_count())

    history, eval_metrics, t0 = [], {}, time.time()
    with preemption.Watcher() as watcher:
        for step in range(start_step + 1, total_steps + 1):
            state, metrics = p_train(state, next(train_iter), rng)
            history.append(metrics)
            progress(step)
            evaluated = step % eval_every == 0 or step == total_steps
            saving = evaluated or step % ckpt_every == 0
            if step % log_every == 0 or saving:  # never evaluate or save a non-finite state
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
                store.save(step, state, meta, metrics=eval_metrics if evaluated else None)
            if step < total_steps and watcher.stop_requested():
                if history:
                    _summarize(history, step, store, config.skip_nonfinite)
                if not saving:
                    store.save(step, state, meta)
                store.wait()
                writer.flush()
                raise Preempted(step, store.directory)
    writer.flush()
    if not eval_metrics:  # resumed a finished run: report its final evaluation again
        eval_metrics = run_eval(state)
    store.wait()
    store.close()
    metrics = dict(eval_metrics, step=int(jax.device_get(state.step)))
    return (metrics, state) if return_state else metrics


def initial_state(config: ml_collections.ConfigDict, model: models.VGG,
                   tx: optax.GradientTransformation, load_init) -> tuple[TrainState, jax.Array]:
    """The step-0 train state (replicated on every device) and the dropout RNG."""
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    image = jnp.zeros((1, config.image_size, config.image_size, 3))
    variables = jax.jit(model.init)(init_rng, image)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if load_init is not None:
        params, stats = load_init(params)
        batch_stats = stats or batch_stats
        logging.info("Initialised from %s.", config.init_from)
    state = TrainState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), plateau=optim.plateau_init())
    return checkpoints.replicated(state), checkpoints.replicated(rng)


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

"""The train state and the steps that run on the devices: train, evaluate, both pmap-ed.

The train state stays unreplicated: ``jax.pmap(..., in_axes=(None, 0, None))`` hands the
same state to every local device and the step returns it with ``out_axes=None``, so nothing
is gathered to the host between steps. Gradients, metrics and BatchNorm statistics are
averaged over the ``batch`` axis, i.e. over all devices of all processes. ``pmap_steps``
is the one place that pmaps them, for the trainer and the benchmarks alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgg_jax import models, optim, sharding
from vgg_jax.metrics import cross_entropy, topk_correct

AXIS = sharding.BATCH_AXIS


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: the data position and RNG derive from ``step``."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    plateau: dict


def initial_state(model: models.VGG, tx: optax.GradientTransformation, image_size: int,
                  seed: int, load_init: Optional[Callable] = None
                  ) -> tuple[TrainState, jax.Array]:
    """The step-0 train state (replicated on every device) and the dropout RNG.

    ``load_init(params) -> (params, batch_stats or None)`` replaces the fresh weights.
    """
    init_rng, rng = jax.random.split(jax.random.key(seed))
    image = jnp.zeros((1, image_size, image_size, 3))
    variables = jax.jit(model.init)(init_rng, image)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if load_init is not None:
        params, stats = load_init(params)
        batch_stats = stats or batch_stats
    state = TrainState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), plateau=optim.plateau_init())
    return sharding.replicated(state), sharding.replicated(rng)


def normalize(batch: dict, mean_rgb, std_rgb) -> jnp.ndarray:
    """uint8 images -> float32 (x + colour shift - mean) / std, mirrored where ``flip``."""
    images = batch["images"].astype(jnp.float32)
    if "flip" in batch:
        images = jnp.where(batch["flip"][:, None, None, None], images[:, :, ::-1], images)
    if "shift" in batch:
        images = images + batch["shift"][:, None, None, :]
    return (images - jnp.asarray(mean_rgb, jnp.float32)) / jnp.asarray(std_rgb, jnp.float32)


def _variables(state: TrainState) -> dict:
    return {"params": state.params, **({"batch_stats": state.batch_stats}
                                       if state.batch_stats else {})}


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
        logits, new_vars = model.apply(_variables(state.replace(params=params)), images,
                                       train=True, rngs={"dropout": rng},
                                       mutable=["batch_stats"])
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
    logits = model.apply(_variables(state), normalize(batch, mean_rgb, std_rgb))
    mask = batch["mask"]
    return jax.lax.psum({
        "loss": (cross_entropy(logits, batch["labels"]) * mask).sum(),
        "top1": (topk_correct(logits, batch["labels"], 1) * mask).sum(),
        "top5": (topk_correct(logits, batch["labels"], 5) * mask).sum(),
        "count": mask.sum(),
    }, AXIS)


def pmap_steps(model: models.VGG, tx: optax.GradientTransformation, schedule, mean_rgb,
               std_rgb, frozen: frozenset = frozenset(), skip_nonfinite: bool = False
               ) -> tuple[Callable, Callable]:
    """(train step, eval step) pmap-ed over the local devices, the state unreplicated.

    ``p_train(state, batch, rng) -> (state, metrics)`` donates ``state``;
    ``p_eval(state, batch) -> sums``. Batches are (devices, per_device, ...) arrays.
    """
    norm = dict(mean_rgb=tuple(mean_rgb), std_rgb=tuple(std_rgb))
    p_train = jax.pmap(functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                                         frozen=frozen, skip_nonfinite=skip_nonfinite,
                                         **norm),
                       axis_name=AXIS, in_axes=(None, 0, None), out_axes=(None, None),
                       donate_argnums=(0,))
    p_eval = jax.pmap(functools.partial(eval_step, model=model, **norm), axis_name=AXIS,
                      in_axes=(None, 0), out_axes=None)
    return p_train, p_eval


def placer() -> Callable[[Any], Any]:
    """A function that places a tree as the pmap-ed train step returns its state.

    Placing the restored or host-updated state that way makes the step compile once, not
    once for the fresh layout and again for its own output's.
    """
    identity = jax.pmap(lambda tree, _: tree, axis_name=AXIS, in_axes=(None, 0), out_axes=None)
    return lambda tree: identity(tree, np.zeros(jax.local_device_count()))


def evaluate(p_eval: Callable, state: TrainState, batches) -> dict:
    """Loss, top-1 and top-5 accuracy over every example of an ``eval_batches`` iterator."""
    totals = None
    for batch in batches:
        sums = p_eval(state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"eval_loss": float(totals["loss"]) / count, "eval_top1": float(totals["top1"]) / count,
            "eval_top5": float(totals["top5"]) / count, "eval_count": int(count)}

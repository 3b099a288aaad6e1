"""The train state and the steps that run on the devices: train, evaluate, both pmap-ed.

The train state stays unreplicated: ``jax.pmap(..., in_axes=(None, 0, None))`` hands the
same state to every local device and the step returns it with ``out_axes=None``, so nothing
is gathered to the host between steps. Gradients, metrics and BatchNorm statistics are
averaged over the ``batch`` axis, i.e. over all devices of all processes. ``pmap_steps``
is the one place that pmaps them, for the trainer and the benchmarks alike.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgg_jax import models
from vgg_jax.compute.modules import per_platform
from vgg_jax.compute.options import DEFAULT as DEFAULT_COMPUTE
from vgg_jax.compute.options import ComputeOptions
from vgg_jax.training import optim
from vgg_jax.parallel import sharding
from vgg_jax.training.metrics import cross_entropy, soft_cross_entropy, topk_correct
from vgg_jax.training.mixing import Mixing, mix

AXIS = sharding.BATCH_AXIS


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: the data position and RNG derive from ``step``.

    ``ema`` holds the moving averages ``{"params", "batch_stats"}`` when ``ema_decay`` > 0,
    else it is empty.
    """

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    plateau: dict
    ema: Any = flax.struct.field(default_factory=dict)

    def ema_state(self) -> "TrainState":
        """This state with the EMA weights in place of the trained ones (for evaluation)."""
        return self.replace(params=self.ema["params"], batch_stats=self.ema["batch_stats"])


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What the train step does beyond the paper's plain SGD step (all off by default).

    ``frozen`` layers keep their BatchNorm statistics too (the optimiser leaves their
    weights); ``skip_nonfinite`` leaves the state as it was after a NaN/inf step;
    ``mixing`` makes the soft targets (label smoothing, mixup, CutMix); the batch is
    processed as ``grad_accum_steps`` micro-batches, in a ``lax.scan`` or unrolled
    (``accumulation`` "scan", "unroll", or "auto": ``_gradients``); ``ema_decay`` > 0
    updates ``state.ema``.
    """

    frozen: frozenset = frozenset()
    skip_nonfinite: bool = False
    mixing: Mixing = Mixing()
    grad_accum_steps: int = 1
    ema_decay: float = 0.0
    accumulation: str = "auto"

    @classmethod
    def from_config(cls, config, frozen: frozenset = frozenset()) -> "StepOptions":
        return cls(frozen=frozen, skip_nonfinite=config.skip_nonfinite,
                   mixing=Mixing.from_config(config), grad_accum_steps=config.grad_accum_steps,
                   ema_decay=config.ema_decay)


def initial_state(model: models.VGG, tx: optax.GradientTransformation, image_size: int,
                  seed: int, load_init: Optional[Callable] = None, ema: bool = False
                  ) -> tuple[TrainState, jax.Array]:
    """The step-0 train state (replicated on every device) and the dropout RNG.

    ``load_init(params) -> (params, batch_stats or None)`` replaces the fresh weights; with
    ``ema`` the moving averages start from the initial weights.
    """
    init_rng, rng = jax.random.split(jax.random.key(seed))
    image = jnp.zeros((1, image_size, image_size, 3))
    variables = jax.jit(model.init)(init_rng, image)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if load_init is not None:
        params, stats = load_init(params)
        batch_stats = stats or batch_stats
    state = _state(params, batch_stats, tx, ema)
    return sharding.replicated(state), sharding.replicated(rng)


def abstract_state(model: models.VGG, tx: optax.GradientTransformation, image_size: int,
                   ema: bool = False) -> TrainState:
    """The step-0 train state as ``jax.ShapeDtypeStruct`` leaves, allocating nothing (for
    lowering or exporting the train step ahead of time)."""
    def fresh():
        variables = model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
        return _state(variables["params"], variables.get("batch_stats", {}), tx, ema)
    return jax.eval_shape(fresh)


def _state(params, batch_stats, tx: optax.GradientTransformation, ema: bool) -> TrainState:
    return TrainState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), plateau=optim.plateau_init(),
                      ema={"params": params, "batch_stats": batch_stats} if ema else {})


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


def _gradients(state: TrainState, images, targets, labels, rng, *, model: models.VGG,
               accum_steps: int, accumulation: str = "auto"):
    """(mean loss, logits, new BatchNorm statistics, mean gradients) of one device's batch.

    With ``accum_steps`` > 1 the batch runs as that many micro-batches, each normalising
    with its own BatchNorm statistics and updating the running ones in turn (as accumulating
    gradients in PyTorch does). On accelerators they run in a ``lax.scan``, so that one
    micro-batch's activations are alive at a time. On CPU they are unrolled: XLA:CPU computes
    a convolution's weight gradient far slower inside a loop (``docs/compute.md``), and CPU
    memory is rarely what limits the batch. Under "auto" the platform the program is lowered
    for decides (``lax.platform_dependent``); ``accumulation`` "scan" or "unroll" forces
    one. ``targets`` None means hard ``labels``.
    """
    def loss_fn(params, batch_stats, images, targets, labels, rng):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        logits, new_vars = model.apply(variables, images, train=True, rngs={"dropout": rng},
                                       mutable=["batch_stats"])
        loss = (cross_entropy(logits, labels) if targets is None
                else soft_cross_entropy(logits, targets))
        return loss.mean(), (logits, new_vars.get("batch_stats", batch_stats))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        (loss, (logits, stats)), grads = grad_fn(state.params, state.batch_stats, images,
                                                 targets, labels, rng)
        return loss, logits, stats, grads

    def micro_batches(x):
        return None if x is None else x.reshape(accum_steps, -1, *x.shape[1:])

    def micro(carry, xs):
        grads_sum, stats = carry
        images, targets, labels, index = xs
        (loss, (logits, stats)), grads = grad_fn(state.params, stats, images, targets, labels,
                                                 jax.random.fold_in(rng, index))
        return (jax.tree_util.tree_map(jnp.add, grads_sum, grads), stats), (loss, logits)

    carry = (jax.tree_util.tree_map(jnp.zeros_like, state.params), state.batch_stats)
    xs = (micro_batches(images), micro_batches(targets), micro_batches(labels),
          jnp.arange(accum_steps))

    def scanned(carry, xs):
        return jax.lax.scan(micro, carry, xs)

    def unrolled(carry, xs):
        outs = []
        for i in range(accum_steps):
            carry, out = micro(carry, jax.tree_util.tree_map(lambda x: x[i], xs))
            outs.append(out)
        return carry, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs)

    if accumulation == "auto":
        (grads, stats), (losses, logits) = jax.lax.platform_dependent(
            carry, xs, cpu=unrolled, default=scanned)
    else:
        (grads, stats), (losses, logits) = {"scan": scanned, "unroll": unrolled}[accumulation](
            carry, xs)
    grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grads)
    return losses.mean(), logits.reshape(-1, logits.shape[-1]), stats, grads


def _device_mean(tree):
    """``pmean`` over the devices; on one device nothing, where XLA:CPU would still copy
    every gradient through an all-reduce (0.13 s of a VGG-16 224/8 step)."""
    return tree if jax.lax.axis_size(AXIS) == 1 else jax.lax.pmean(tree, AXIS)


_MIX_STREAM = 0x6D6978  # folds the mixing draws out of the step's key, apart from dropout's


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: models.VGG,
               tx: optax.GradientTransformation, schedule, mean_rgb, std_rgb,
               options: StepOptions = StepOptions()) -> tuple[TrainState, dict]:
    """One optimiser step on one device's share of the batch (run under ``jax.pmap``).

    ``metrics["finite"]`` is 0 when the loss or the gradients are NaN or infinite. Training
    top-1/top-5 count against each example's dominant label when batches are mixed.
    """
    images = normalize(batch, mean_rgb, std_rgb)
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
    mixing = options.mixing
    labels = batch["labels"]
    targets = None
    if mixing.mixes or mixing.label_smoothing > 0:
        images, targets, labels = mix(jax.random.fold_in(rng, _MIX_STREAM), images, labels,
                                      model.num_classes, mixing)
    loss, logits, new_stats, grads = _gradients(state, images, targets, batch["labels"], rng,
                                                model=model,
                                                accum_steps=options.grad_accum_steps,
                                                accumulation=options.accumulation)
    grads = _device_mean(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * state.plateau["scale"], updates)
    grad_norm = optax.global_norm(grads)
    metrics = _device_mean({
        "loss": loss,
        "top1": topk_correct(logits, labels, 1).mean(),
        "top5": topk_correct(logits, labels, 5).mean(),
        "learning_rate": schedule(state.step) * state.plateau["scale"],
        "grad_norm": grad_norm,
    })
    metrics["finite"] = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)).astype(
        jnp.float32)
    batch_stats = {k: state.batch_stats[k] if k in options.frozen else v
                   for k, v in (new_stats or state.batch_stats).items()}
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats)
    if options.ema_decay > 0:
        new_state = new_state.replace(ema=ema_update(
            state.ema, {"params": new_state.params, "batch_stats": batch_stats},
            options.ema_decay))
    if options.skip_nonfinite:
        keep = metrics["finite"] > 0
        new_state = new_state.replace(**{
            name: jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old),
                                         getattr(new_state, name), getattr(state, name))
            for name in ("params", "opt_state", "batch_stats", "ema")})
    return new_state, metrics


def ema_update(ema: Any, current: Any, decay: float) -> Any:
    """One step of the exponential moving average: ``decay * ema + (1 - decay) * current``."""
    return jax.tree_util.tree_map(lambda e, c: decay * e + (1.0 - decay) * c, ema, current)


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


def step_functions(model: models.VGG, tx: optax.GradientTransformation, schedule, mean_rgb,
                   std_rgb, options: StepOptions = StepOptions(),
                   compute: Optional[ComputeOptions] = DEFAULT_COMPUTE
                   ) -> tuple[Callable, Callable]:
    """(train step, eval step) for one device, before ``pmap``: ``train(state, batch, rng)``
    and ``evaluate(state, batch)`` on one device's share of the batch.

    Each step computes the layers per platform, decided once for the whole step when it is
    lowered (``vgg_jax.compute.modules.per_platform``): with ``compute``'s CPU layers on the
    CPU (the training rules in the train step), with ``model``'s own elsewhere;
    ``compute=None`` keeps ``model``'s own everywhere.
    """
    norm = dict(mean_rgb=tuple(mean_rgb), std_rgb=tuple(std_rgb))

    def train_for(m):
        return functools.partial(train_step, model=m, tx=tx, schedule=schedule,
                                 options=options, **norm)

    def eval_for(m):
        return functools.partial(eval_step, model=m, **norm)

    if compute is None:
        return train_for(model), eval_for(model)
    return (per_platform(train_for, model, training=True, options=compute),
            per_platform(eval_for, model, training=False, options=compute))


def pmap_steps(model: models.VGG, tx: optax.GradientTransformation, schedule, mean_rgb,
               std_rgb, options: StepOptions = StepOptions(),
               compute: Optional[ComputeOptions] = DEFAULT_COMPUTE) -> tuple[Callable, Callable]:
    """(train step, eval step) of ``step_functions`` pmap-ed over the local devices, the
    state unreplicated.

    ``p_train(state, batch, rng) -> (state, metrics)`` donates ``state``;
    ``p_eval(state, batch) -> sums``. Batches are (devices, per_device, ...) arrays.
    """
    train, evaluate = step_functions(model, tx, schedule, mean_rgb, std_rgb, options, compute)
    p_train = jax.pmap(train, axis_name=AXIS, in_axes=(None, 0, None), out_axes=(None, None),
                       donate_argnums=(0,))
    p_eval = jax.pmap(evaluate, axis_name=AXIS, in_axes=(None, 0), out_axes=None)
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

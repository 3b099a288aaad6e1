"""Optimiser and learning-rate schedules: the paper's SGD recipe and the modern ones.

- SGD with momentum (0.9 in the paper) and an L2 penalty on the weights (5e-4), applied as
  ``g + wd * w`` on kernels only (biases and BatchNorm parameters are not decayed); or AdamW
  or LARS (``optimizer``), optionally after clipping the gradients' global norm.
- Schedules: ``plateau`` (the paper: divide by 10 when validation top-1 stops improving, at
  most 3 times), ``step`` (divide at given epochs), ``cosine`` (with linear warmup) and
  ``constant``. ``lr_scaling='linear'`` multiplies the base rate by global_batch / 256.

The plateau rule acts on evaluations, which happen on the host: its state is a small dict of
scalars stored in the train state (and so in checkpoints), and its ``scale`` multiplies the
updates of every train step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vgg_jax.training.durations import to_steps

SCHEDULES = ("plateau", "step", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw", "lars")


def base_learning_rate(config: ml_collections.ConfigDict) -> float:
    """The configured rate, linearly scaled with the batch size when asked."""
    if config.lr_scaling == "linear":
        return config.learning_rate * config.batch_size / 256
    if config.lr_scaling not in ("none", "", None):
        raise ValueError(f"Unknown lr_scaling {config.lr_scaling!r}; use 'none' or 'linear'.")
    return config.learning_rate


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The step-indexed learning-rate schedule (without the plateau factor)."""
    lr = base_learning_rate(config)
    warmup = to_steps(config.warmup_epochs, steps_per_epoch)
    if config.schedule in ("plateau", "constant"):
        main = optax.constant_schedule(lr)
    elif config.schedule == "step":
        boundaries = {to_steps(e, steps_per_epoch) - warmup: config.lr_decay_factor
                      for e in config.lr_decay_epochs}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup))
    else:
        raise ValueError(f"Unknown schedule {config.schedule!r}; use one of {SCHEDULES}.")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(which: str) -> Callable:
    """The weights that weight decay applies to: ``kernels`` (convolution and fully
    connected weights, the paper's; not biases or BatchNorm) or ``all`` parameters."""
    if which == "all":
        return lambda params: jax.tree_util.tree_map(lambda _: True, params)
    if which != "kernels":
        raise ValueError(f"Unknown weight_decay_on {which!r}; use 'kernels' or 'all'.")
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def create_optimizer(config: ml_collections.ConfigDict, schedule: Callable,
                     frozen: frozenset = frozenset()) -> optax.GradientTransformation:
    """The configured optimiser, after clipping the gradients' global norm (if asked).

    - ``sgd``: L2 weight decay (``g + wd * w``), then SGD with (Nesterov) momentum;
    - ``adamw``: Adam with decoupled weight decay (``w -= lr * wd * w``);
    - ``lars``: SGD with momentum and layer-wise trust ratios (You et al., 2017), for large
      batches; the layers not decayed (``weight_decay_on``) get no trust ratio either.

    Layers named in ``frozen`` get no update at all (no decay, no momentum).
    """
    mask = decay_mask(config.weight_decay_on)
    if config.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask=mask),
            optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    elif config.optimizer == "adamw":
        tx = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2,
                         weight_decay=config.weight_decay, mask=mask)
    elif config.optimizer == "lars":
        tx = optax.lars(schedule, weight_decay=config.weight_decay, weight_decay_mask=mask,
                        trust_coefficient=config.lars_trust_coefficient, trust_ratio_mask=mask,
                        momentum=config.momentum, nesterov=config.nesterov)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; use one of {OPTIMIZERS}.")
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    if not frozen:
        return tx

    def labels(params):
        return {layer: jax.tree_util.tree_map(
                    lambda _: "frozen" if layer in frozen else "trained", tree)
                for layer, tree in params.items()}

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def plateau_init() -> dict:
    """State of the reduce-on-plateau rule: best metric, evaluations without gain, scale."""
    return {"best": jnp.float32(-jnp.inf), "bad_evals": jnp.int32(0),
            "reductions": jnp.int32(0), "scale": jnp.float32(1.0)}


def plateau_update(state: dict, metric: float, config: ml_collections.ConfigDict) -> dict:
    """Feeds one validation ``metric`` (higher is better) to the rule; returns its new state.

    After ``plateau_patience`` evaluations without an improvement of at least
    ``plateau_min_delta``, the scale is multiplied by ``lr_decay_factor``, at most
    ``plateau_max_reductions`` times.
    """
    best, bad = float(state["best"]), int(state["bad_evals"])
    reductions, scale = int(state["reductions"]), float(state["scale"])
    if metric > best + config.plateau_min_delta:
        best, bad = metric, 0
    else:
        bad += 1
    if (config.schedule == "plateau" and bad >= config.plateau_patience
            and reductions < config.plateau_max_reductions):
        scale, reductions, bad = scale * config.lr_decay_factor, reductions + 1, 0
    return {"best": jnp.float32(best), "bad_evals": jnp.int32(bad),
            "reductions": jnp.int32(reductions), "scale": jnp.float32(scale)}

"""Classification metrics shared by training, evaluation and prediction.

Cross-entropy in float32, and top-k hits with ties broken by class index (as ``argmax`` and
``top_k`` break them), so that a metric computed here agrees with a sorted prediction list.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example softmax cross-entropy in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Per-example cross-entropy against target distributions (N, classes), in float32."""
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(scores: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
    """1.0 where ``labels`` is among the ``k`` highest scores.

    Ties are broken by class index: a class with the label's score and a lower index ranks
    above the label.
    """
    label_score = jnp.take_along_axis(scores, labels[:, None], axis=-1)
    lower = jnp.arange(scores.shape[-1]) < labels[:, None]
    rank = jnp.sum((scores > label_score) | ((scores == label_score) & lower), axis=-1)
    return (rank < k).astype(jnp.float32)


def topk_errors(posteriors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) error of posteriors (N, classes) against integer labels (N,)."""
    return tuple(1.0 - float(jnp.mean(topk_correct(jnp.asarray(posteriors),
                                                   jnp.asarray(labels), k)))
                 for k in (1, 5))

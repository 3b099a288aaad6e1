"""The same VGG network and step in vgg_jax, PyTorch (eager) and Keras on TensorFlow.

Each ``measure_<framework>(case)`` times one case in its own process (``benchmarks/speed.py``
starts one process per framework and image size, so thread pools and allocators never
mix) and returns images/s for a training step and for inference, the compile (or first
call) seconds, and the peak resident memory of the process during each measurement.

All three run Table 1's network with the paper's head (fc6/fc7 of 4096 with dropout 0.5,
fc8 of 1000), SGD with momentum 0.9 and weight decay 5e-4, softmax cross-entropy, on random
images. vgg_jax runs its own ``steps.train_step``/``steps.eval_step`` under ``jax.pmap``
(uint8 input, normalised on the device, donated state), exactly as the trainer does.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from vgg_jax import models  # noqa: E402  (JAX itself is imported only by the JAX worker)


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark point."""

    arch: str
    size: int = 224
    batch: int = 8
    dtype: str = "float32"
    steps: int = 3          # timed steps after one warm-up step
    width: float = 1.0
    modes: tuple[str, ...] = ("train", "infer")


def forward_macs(arch: str, size: int, width: float = 1.0) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and FC layers)."""
    return sum(r["macs"] for r in models.summary(models.create_model(arch, width=width), size))


def _peak_rss_reset() -> None:
    """Resets the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def step_times(run: Callable[[], None], steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``run`` (which blocks until done), after one
    warm-up call."""
    run()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def _timed(run: Callable[[], None], steps: int) -> float:
    """Median seconds per call of ``run`` after one warm-up call.

    The median, not the mean: on a shared machine one step slowed by a neighbour would
    otherwise move the result (and the ratio to the other frameworks) by its whole delay.
    """
    return float(np.median(step_times(run, steps)))


def _record(case: Case, mode: str, first_call: Callable[[], None],
            run: Callable[[], None]) -> dict:
    """Times the first call (compilation) and the steady state of one mode, with memory."""
    gc.collect()
    _peak_rss_reset()
    start = time.perf_counter()
    first_call()
    compile_s = time.perf_counter() - start
    seconds = _timed(run, case.steps)
    return {"mode": mode, "images_per_s": case.batch / seconds, "first_call_s": compile_s,
            "peak_rss_gib": _peak_rss_gib()}


def jax_train_setup(config, per_device_batch: int, num_classes: int = 1000):
    """vgg_jax's pmap-ed train and eval steps, state and device batches, as the trainer has.

    Returns ``(p_train, p_eval, state, batch, rng)``; the batch holds random uint8 images,
    flip bits, labels and a mask of ones, sharded over all local devices.
    """
    import jax
    from vgg_jax.training import optim, steps
    from vgg_jax.parallel import sharding
    from vgg_jax.store.record import ModelRecord, module_options

    devices = jax.local_device_count()
    record = ModelRecord.from_config(config)
    model = record.build(**module_options(config), bn_axis_name=steps.AXIS)
    schedule = optim.create_schedule(config, steps_per_epoch=1000, total_steps=10_000)
    tx = optim.create_optimizer(config, schedule)
    state, rng = steps.initial_state(model, tx, config.image_size, config.seed)
    p_train, p_eval = steps.pmap_steps(model, tx, schedule, record.mean_rgb, record.std_rgb)
    rng_np = np.random.default_rng(0)
    size = config.image_size
    shape = (devices, per_device_batch)
    host = {"images": rng_np.integers(0, 256, (*shape, size, size, 3), dtype=np.uint8),
            "flip": rng_np.random(shape) < 0.5,
            "labels": rng_np.integers(0, num_classes, shape),
            "mask": np.ones(shape, np.float32)}
    return p_train, p_eval, state, sharding.to_local_devices(host), rng


def run_steps(step, state, batch, rng, steps: int):
    """Runs a pmap-ed train step ``steps`` (>= 1) times on one batch; returns
    ``(state, metrics, seconds)``, the last step's metrics."""
    import jax
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    return state, metrics, time.perf_counter() - start


def measure_jax(case: Case) -> list[dict]:
    """vgg_jax's train and eval steps; ``first_call_s`` is the XLA compile time alone."""
    import jax
    from configs import default

    config = default.get_config()
    config.arch, config.dtype, config.image_size = case.arch, case.dtype, case.size
    config.width, config.batch_size, config.learning_rate = case.width, case.batch, 1e-3
    devices = jax.local_device_count()
    p_train, p_eval, state, batch, rng = jax_train_setup(config, case.batch // devices)
    results = []
    if "train" in case.modes:
        compiled = []
        holder = {"state": state}

        def compile_train():
            compiled.append(p_train.lower(holder["state"], batch, rng).compile())

        def train_run():
            holder["state"], metrics = compiled[0](holder["state"], batch, rng)
            jax.block_until_ready(metrics)

        results.append(_record(case, "train", compile_train, train_run))
        state = holder["state"]
    if "infer" in case.modes:
        compiled = []
        results.append(_record(
            case, "infer", lambda: compiled.append(p_eval.lower(state, batch).compile()),
            lambda: jax.block_until_ready(compiled[0](state, batch))))
    return results


def torch_model(arch: str, size: int, width: float = 1.0, num_classes: int = 1000):
    """Table 1's ``arch`` as a ``torch.nn.Sequential`` (torchvision's layout; LRN as ours)."""
    from torch import nn

    layers, channels = [], 3
    for layer in models.get_spec(arch).layers():
        if layer.kind == "conv":
            out = max(1, round(layer.channels * width))
            layers += [nn.Conv2d(channels, out, layer.kernel, padding=layer.kernel // 2),
                       nn.ReLU(True)]
            channels = out
        elif layer.kind == "lrn":
            layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
        else:
            layers.append(nn.MaxPool2d(2))
    fc = round(4096 * width)
    side = size // 32
    layers += [nn.Flatten(), nn.Linear(channels * side * side, fc), nn.ReLU(True),
               nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(0.5),
               nn.Linear(fc, num_classes)]
    return nn.Sequential(*layers)


def measure_torch(case: Case) -> list[dict]:
    """PyTorch eager (NCHW, default threads); bf16 through CPU autocast."""
    import torch

    torch.manual_seed(0)
    model = torch_model(case.arch, case.size, case.width)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(case.batch, 3, case.size, case.size)
    labels = torch.randint(0, 1000, (case.batch,))
    autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16,
                                 enabled=case.dtype == "bfloat16")

    def train_run():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()

    def infer_run():
        with torch.inference_mode(), autocast():
            model(images)

    results = []
    if "train" in case.modes:
        model.train()
        results.append(_record(case, "train", train_run, train_run))
    if "infer" in case.modes:
        model.eval()
        results.append(_record(case, "infer", infer_run, infer_run))
    return results


def keras_model(arch: str, size: int, width: float = 1.0, num_classes: int = 1000):
    """Table 1's ``arch`` as a ``keras.Sequential`` (channels last, LRN as ours)."""
    import keras
    import tensorflow as tf

    layers = [keras.Input((size, size, 3))]
    for layer in models.get_spec(arch).layers():
        if layer.kind == "conv":
            layers.append(keras.layers.Conv2D(max(1, round(layer.channels * width)),
                                              layer.kernel, padding="same", activation="relu"))
        elif layer.kind == "lrn":
            layers.append(keras.layers.Lambda(lambda x: tf.nn.local_response_normalization(
                x, depth_radius=2, bias=2.0, alpha=1e-4 / 5, beta=0.75)))
        else:
            layers.append(keras.layers.MaxPooling2D(2))
    fc = round(4096 * width)
    layers += [keras.layers.Flatten(), keras.layers.Dense(fc, activation="relu"),
               keras.layers.Dropout(0.5), keras.layers.Dense(fc, activation="relu"),
               keras.layers.Dropout(0.5), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers)


def measure_keras(case: Case) -> list[dict]:
    """Keras 3 on TensorFlow, ``train_on_batch``/``predict_on_batch`` as compiled by default."""
    import keras
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(0)
    if case.dtype == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = keras_model(case.arch, case.size, case.width)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=5e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(case.batch, case.size, case.size, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, case.batch)
    train_run = lambda: model.train_on_batch(images, labels)  # noqa: E731
    infer_run = lambda: model.predict_on_batch(images)  # noqa: E731
    results = []
    if "train" in case.modes:
        results.append(_record(case, "train", train_run, train_run))
    if "infer" in case.modes:
        results.append(_record(case, "infer", infer_run, infer_run))
    return results


MEASURE = {"vgg_jax": measure_jax, "pytorch": measure_torch, "keras": measure_keras}


def matmul_peak(framework: str, dtype: str = "float32",
                sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> float:
    """The best FLOP/s of square matrix products in ``framework`` (2 FLOP per MAC):
    ``vgg_jax`` (XLA), ``onednn`` (vgg_jax's oneDNN kernels) or ``pytorch``."""
    best = 0.0
    for n in sizes:
        if framework in ("vgg_jax", "onednn"):
            import jax
            import jax.numpy as jnp
            from vgg_jax.compute import onednn
            if framework == "onednn" and not (onednn.available() and onednn.has_kernels(dtype)):
                raise ImportError(f"no oneDNN {dtype} kernels here")
            a = jnp.ones((n, n), dtype)
            f = jax.jit(onednn.matmul if framework == "onednn" else lambda x, y: x @ y)
            run = lambda: f(a, a).block_until_ready()  # noqa: E731
        else:
            import torch
            a = torch.ones(n, n, dtype=getattr(torch, dtype))
            run = lambda: a @ a  # noqa: E731
        run()
        seconds = min(_timed(run, 1) for _ in range(repeats))
        best = max(best, 2 * n ** 3 / seconds)
    return best

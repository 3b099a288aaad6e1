"""PyTorch weight files without torch: a ``torch.save`` writer and a NumPy torchvision VGG.

``write_pth`` produces what ``torch.save(model.state_dict(), path)`` writes: a zip holding
``archive/data.pkl`` (protocol 2, tensors as ``torch._utils._rebuild_tensor_v2`` over
persistent storages), ``archive/data/<key>`` raw little-endian buffers, ``byteorder`` and
``version``; ``legacy=True`` gives the pre-1.6 sequential format. ``torchvision_forward``
runs a torchvision VGG state dict on NCHW images, the layout torchvision computes in.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vgg_jax import models

STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.float16): "HalfStorage"}


class Global:
    """``module.name``, pickled as a GLOBAL opcode without importing the module."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError("only for pickling")


class _Storage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, np.require(array, requirements="C")


class _Tensor:
    def __init__(self, storage: _Storage):
        self.storage = storage

    def __reduce__(self):
        shape = self.storage.array.shape
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        return (Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, 0, shape, stride, False, collections.OrderedDict()))


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)
    legacy = False

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        kind = Global("torch", STORAGE_TYPES[obj.array.dtype])
        pid = ("storage", kind, obj.key, "cpu", obj.array.size)
        return pid + (None,) if self.legacy else pid


def write_pth(path: str, state: dict, legacy: bool = False) -> None:
    """Writes ``state`` ({name: array}) as ``torch.save`` of a state dict would."""
    storages = [_Storage(str(i), a) for i, a in enumerate(state.values())]
    tree = collections.OrderedDict((k, _Tensor(s)) for k, s in zip(state, storages))
    tree._metadata = collections.OrderedDict({"": {"version": 1}})
    buf = io.BytesIO()
    pickler = _Pickler(buf, protocol=2)
    pickler.legacy = legacy
    pickler.dump(tree)
    if legacy:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001,
                           {"protocol_version": 1001, "little_endian": True}):
                f.write(pickle.dumps(header, protocol=2))
            f.write(buf.getvalue())
            f.write(pickle.dumps([s.key for s in storages], protocol=2))
            for s in storages:
                f.write(struct.pack("<q", s.array.size) + s.array.tobytes())
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.array.tobytes())
        zf.writestr("archive/version", "3\n")


def torchvision_state_dict(arch: str, rng: np.random.Generator, num_classes: int = 1000) -> dict:
    """Random weights with the exact keys and shapes of ``torchvision.models.<arch>()``."""
    spec = models.get_spec(arch)
    state, index, channels = {}, 0, 3
    for block in spec.blocks:
        for out, k in block:
            state[f"features.{index}.weight"] = (rng.standard_normal((out, channels, k, k))
                                                 * np.sqrt(2 / (channels * k * k)))
            state[f"features.{index}.bias"] = rng.normal(0, 0.1, out)
            index += 1
            if spec.batch_norm:
                state[f"features.{index}.weight"] = rng.uniform(0.5, 1.5, out)
                state[f"features.{index}.bias"] = rng.normal(0, 0.1, out)
                state[f"features.{index}.running_mean"] = rng.normal(0, 0.5, out)
                state[f"features.{index}.running_var"] = rng.uniform(0.5, 2.0, out)
                state[f"features.{index}.num_batches_tracked"] = np.array(100, np.int64)
                index += 1
            channels = out
            index += 1
        index += 1
    for i, (n_in, n_out) in zip((0, 3, 6), ((512 * 49, 4096), (4096, 4096), (4096, num_classes))):
        state[f"classifier.{i}.weight"] = rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)
        state[f"classifier.{i}.bias"] = rng.normal(0, 0.1, n_out)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


def _conv_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = w.shape[-1]
    p = k // 2
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    windows = sliding_window_view(x, (k, k), axis=(2, 3))  # n, c, h, w, k, k
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]


def torchvision_forward(state: dict, arch: str, x: np.ndarray) -> np.ndarray:
    """Logits of torchvision's VGG (eval mode) on NCHW float images, in float64."""
    spec = models.get_spec(arch)
    x = x.astype(np.float64)
    index = 0
    for block in spec.blocks:
        for _ in block:
            x = _conv_nchw(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"])
            index += 1
            if spec.batch_norm:
                g, beta, mean, var = (state[f"features.{index}.{n}"].astype(np.float64)[:, None, None]
                                      for n in ("weight", "bias", "running_mean", "running_var"))
                x = (x - mean) / np.sqrt(var + 1e-5) * g + beta
                index += 1
            x = np.maximum(x, 0)
            index += 1
        n, c, h, w = x.shape
        x = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max((3, 5))
        index += 1
    assert x.shape[2:] == (7, 7), "AdaptiveAvgPool2d((7, 7)) is the identity only at 224"
    x = x.reshape(len(x), -1)  # NCHW flatten
    for i in (0, 3, 6):
        x = x @ state[f"classifier.{i}.weight"].T + state[f"classifier.{i}.bias"]
        x = np.maximum(x, 0) if i < 6 else x
    return x

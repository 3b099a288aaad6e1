"""Readers for other libraries' weight files, as NumPy arrays, without those libraries.

- PyTorch ``.pth`` / ``.pt``: the zip-of-pickles format of ``torch.save`` (and the older
  sequential format torchvision's first VGG files use). The pickle is read by a restricted
  unpickler that resolves only tensor reconstruction, storage types and ``OrderedDict``, so
  a malicious file cannot run code: any other global is refused before it is called.
- ``.safetensors``: a JSON header and raw little-endian buffers.
- Keras HDF5: the legacy weight files Keras ships (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``
  and ``_notop``), whole-model ``.h5`` files, and Keras 3 ``.weights.h5`` files.

Every reader raises ``UserError`` naming the file when it is truncated or not of its format.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from vgg_jax.errors import UserError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """What the unpickler hands out for ``torch.FloatStorage`` and friends."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _TensorRef:
    """A tensor whose storage bytes may not have been read yet (the legacy format)."""

    def __init__(self, storage: tuple, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self, buffers: dict) -> np.ndarray:
        key, dtype = self.storage
        flat = buffers[key]
        size, stride = tuple(int(s) for s in self.size), tuple(int(s) for s in self.stride)
        if len(size) != len(stride) or any(s < 0 for s in size + stride) or self.offset < 0:
            raise pickle.UnpicklingError(f"tensor with bad size {size} or stride {stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
        if last >= len(flat):  # as_strided must never read past the storage
            raise pickle.UnpicklingError(f"tensor of size {size} overruns its storage")
        if not all(size):
            return np.zeros(size, dtype)
        return np.lib.stride_tricks.as_strided(
            flat[self.offset:], size, [s * dtype.itemsize for s in stride]).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict}
_ALLOWED.update({("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})


class Refused(pickle.UnpicklingError):
    """The pickle asked for something other than tensors and dicts."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch state dict; refuses every global but tensor reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(
                f"refusing {module}.{name}: only tensors and dicts may be loaded") from None

    def persistent_load(self, pid: Any) -> tuple:
        # ('storage', storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return (str(pid[2]), pid[1].dtype)


def _materialize(tree: Any, buffers: dict) -> Any:
    if isinstance(tree, _TensorRef):
        return tree.materialize(buffers)
    if isinstance(tree, dict):
        return {k: _materialize(v, buffers) for k, v in tree.items()}
    return tree


def _storage_refs(tree: Any) -> dict:
    """{storage key: dtype} of every tensor in ``tree``."""
    if isinstance(tree, _TensorRef):
        return {tree.storage[0]: tree.storage[1]}
    if isinstance(tree, dict):
        return {k: d for v in tree.values() for k, d in _storage_refs(v).items()}
    return {}


def _load_zip(f) -> Any:
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise pickle.UnpicklingError("no single data.pkl in the archive")
        prefix = pkl[0][:-len("data.pkl")]
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names \
            else "little"
        tree = RestrictedUnpickler(io.BytesIO(zf.read(pkl[0]))).load()
        buffers = {}
        for key, dtype in _storage_refs(tree).items():
            dt = dtype.newbyteorder("<" if byteorder == "little" else ">")
            buffers[key] = np.frombuffer(zf.read(f"{prefix}data/{key}"), dt).astype(dtype)
    return _materialize(tree, buffers)


def _load_legacy(f) -> Any:
    """The pre-1.6 ``torch.save`` format: magic, protocol, sys info, the object, storages."""
    if RestrictedUnpickler(f).load() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file")
    RestrictedUnpickler(f).load()  # protocol version
    RestrictedUnpickler(f).load()  # sys info
    tree = RestrictedUnpickler(f).load()
    keys = RestrictedUnpickler(f).load()
    dtypes = _storage_refs(tree)
    buffers = {}
    for key in keys:
        dtype = dtypes.get(str(key), np.dtype(np.uint8))
        (numel,) = struct.unpack("<q", f.read(8))
        data = f.read(numel * dtype.itemsize)
        if len(data) != numel * dtype.itemsize:
            raise EOFError("storage data ends early")
        buffers[str(key)] = np.frombuffer(data, dtype)
    return _materialize(tree, buffers)


def _state_dict(tree: Any, path: str) -> dict[str, np.ndarray]:
    if isinstance(tree, dict) and isinstance(tree.get("state_dict"), dict):
        tree = tree["state_dict"]  # training checkpoints that wrap the state dict
    if not isinstance(tree, dict):
        raise UserError(f"{path} holds a {type(tree).__name__}, not a state dict.")
    out = {}
    for key, value in tree.items():
        if isinstance(value, np.ndarray):
            out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2 = b"\x80\x02"  # what the legacy format's first pickle starts with


def read_torch(path: str) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state-dict file (``.pth``, ``.pt``), keyed by name."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if len(head) < 4:
            raise UserError(f"{path} is truncated or empty ({len(head)} bytes).")
        if zipfile.is_zipfile(f):
            load = _load_zip
        elif head == _ZIP_MAGIC:  # a zip whose end (the central directory) is missing
            raise UserError(f"{path} is truncated: it starts as a torch.save zip but its end "
                            f"is missing; download or copy it again.")
        elif head.startswith(_PICKLE_PROTOCOL_2):
            load = _load_legacy
        else:
            raise UserError(f"{path} is not a PyTorch weight file (neither a torch.save zip "
                            f"nor the legacy format); convert a .pth, .safetensors or .h5.")
        f.seek(0)
        try:
            tree = load(f)
        except Refused as e:
            if load is _load_legacy and f.tell() >= os.path.getsize(path):
                # A cut inside a pickled name reads as a request for another global.
                raise UserError(f"{path} is truncated (it ends inside its pickle).") from None
            raise UserError(f"{path}: {e}; not loading it.") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError,
                struct.error, IndexError, TypeError) as e:
            raise UserError(f"{path} is truncated or not a PyTorch weight file "
                            f"({' '.join(str(e).split())[:200]}).") from None
    return _state_dict(tree, path)


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file, keyed by name."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
            body = f.read()
            out = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                start, end = info["data_offsets"]
                dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
                if not 0 <= start <= end <= len(body):
                    raise ValueError(f"{name} lies outside the file")
                out[name] = np.frombuffer(body[start:end], dtype).reshape(info["shape"]).copy()
        except (struct.error, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is truncated or not a safetensors file ({e}).") from None
    return out


def read_keras_h5(path: str) -> dict[str, list[np.ndarray]]:
    """{layer name: [its weights]} of a Keras HDF5 weight or model file, in network order.

    Layers without weights (input, pooling, flatten) are left out.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layers" in f and "layer_names" not in f.attrs:
                # Keras 3 .weights.h5: layers named by type in creation order (conv2d_10)
                # and stored alphabetically; put them back in creation order.
                def order(name):
                    base, _, n = name.rpartition("_")
                    return (base, int(n)) if n.isdigit() else (name, 0)
                return {name: [np.asarray(f["layers"][name]["vars"][k])
                               for k in sorted(f["layers"][name]["vars"], key=int)]
                        for name in sorted(f["layers"], key=order)
                        if len(f["layers"][name].get("vars", {}))}
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise UserError(f"{path} is an HDF5 file but not Keras weights.")
            out = {}
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                group = root[name]
                weights = [np.asarray(group[w.decode() if isinstance(w, bytes) else w])
                           for w in group.attrs["weight_names"]]
                if weights:
                    out[name] = weights
            return out
    except OSError as e:
        raise UserError(f"{path} is truncated or not an HDF5 file ({e}).") from None


def read(path: str) -> Any:
    """Dispatches on the file name: ``.h5`` to Keras, ``.safetensors``, else PyTorch."""
    if not os.path.isfile(path):
        raise UserError(f"No such weight file: {path}.")
    if path.endswith(".h5"):
        return read_keras_h5(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return read_torch(path)

"""A trained net as a StableHLO, SavedModel, TFLite or ONNX artefact (``export``), each
checked against ``model.apply`` with its own runtime (``load``, ``reference``) before it is
kept. The command is ``python -m vgg_jax.export`` (``vgg_jax/export.py``, where the formats
and flags are described)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax import models
from vgg_jax.errors import UserError
from vgg_jax.inference.predict import class_names
from vgg_jax.store.record import ModelRecord

FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
ARTEFACTS = {"stablehlo": "model.jax_exported", "savedmodel": "saved_model.pb",
             "tflite": "model.tflite", "onnx": "model.onnx"}
# The Python packages each format needs beyond vgg_jax's own.
PACKAGES = {"onnx": ("onnx", "onnxruntime")}
EXTRA = 'pip install -e ".[export]"'
PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Interface:
    """What an exported graph takes and gives (written to ``export.json``)."""

    format: str
    image_size: int
    batch: int = 1  # 0: symbolic
    logits: bool = False
    dense: bool = False

    @property
    def output(self) -> str:
        return "logits" if self.logits else "probabilities"

    def input_shape(self) -> tuple:
        """(N, S, S, 3), N None when symbolic."""
        return (self.batch or None, self.image_size, self.image_size, 3)


def check_packages(fmt: str) -> None:
    """``UserError`` naming the ``export`` extra if a package ``fmt`` needs is missing."""
    import importlib.util
    missing = [p for p in PACKAGES.get(fmt, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"--format {fmt} needs {', '.join(missing)}: install the export extra "
                        f"({EXTRA}).")


def interface_for(record: ModelRecord, fmt: str, batch: int = 1, logits: bool = False,
                  image_size: int = 0) -> Interface:
    """The interface of exporting ``record``'s net; ``UserError`` if it cannot be exported."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if not record.include_top:
        raise UserError("the checkpoint holds a net without its classifier (no fc6-8): there "
                        "are no class scores to export.")
    if batch < 0:
        raise UserError(f"--batch {batch}: give a batch size, or 0 for a symbolic one.")
    size = image_size or record.image_size
    if size < record.image_size:
        raise UserError(f"--image_size {size} is smaller than the checkpoint's crop "
                        f"{record.image_size}: export at {record.image_size} or larger (dense).")
    return Interface(fmt, size, batch, logits, dense=size != record.image_size)


def serving_function(record: ModelRecord, iface: Interface) -> Callable:
    """``serve(variables, images)``: uint8 (N, S, S, 3) -> probabilities or logits.

    The model's own layers (``models.layers``): every convolution is XLA's, which all
    exporters and runtimes understand, with none of the CPU's kernels (``vgg_jax.compute``).
    """
    model = record.build()
    mean = np.asarray(record.mean_rgb, np.float32)
    std = np.asarray(record.std_rgb, np.float32)

    def serve(variables, images):
        x = (images.astype(jnp.float32) - mean) / std
        out = model.apply(variables, x, dense=iface.dense).astype(jnp.float32)
        return out if iface.logits else jax.nn.softmax(out, axis=-1)

    return serve


def _polymorphic_shape(iface: Interface) -> str:
    s = iface.image_size
    return f"({iface.batch or 'b'}, {s}, {s}, 3)"


def _stablehlo(serve, variables, iface: Interface, out: str) -> None:
    shape = jax.export.symbolic_shape(_polymorphic_shape(iface))
    images = jax.ShapeDtypeStruct(shape, jnp.uint8)
    exported = jax.export.export(jax.jit(lambda x: serve(variables, x)),
                                 platforms=PLATFORMS)(images)
    with open(os.path.join(out, ARTEFACTS["stablehlo"]), "wb") as f:
        f.write(exported.serialize())


def _tf_module(serve, variables, iface: Interface, labels: str):
    """A ``tf.Module`` holding the weights as variables, with a ``serving`` tf.function."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(serve, with_gradient=False,
                               polymorphic_shapes=[None, _polymorphic_shape(iface)])
    module = tf.Module()
    module.variables_ = tf.nest.map_structure(tf.Variable, variables)
    module.labels = tf.saved_model.Asset(labels)
    spec = tf.TensorSpec(iface.input_shape(), tf.uint8, name="images")

    @tf.function(input_signature=[spec], autograph=False)
    def serving(images):
        return {iface.output: converted(module.variables_, images)}

    module.serving = serving
    return module


def _savedmodel(serve, variables, iface: Interface, out: str) -> None:
    import tensorflow as tf
    module = _tf_module(serve, variables, iface, os.path.join(out, "labels.txt"))
    tf.saved_model.save(module, out, signatures={"serving_default": module.serving})


def _tflite(serve, variables, iface: Interface, out: str) -> None:
    import tensorflow as tf
    module = _tf_module(serve, variables, iface, os.path.join(out, "labels.txt"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serving.get_concrete_function()], module)
    with open(os.path.join(out, ARTEFACTS["tflite"]), "wb") as f:
        f.write(converter.convert())


def onnx_graph(record: ModelRecord, variables: dict, iface: Interface, names: Sequence[str]):
    """The net as an ONNX ``ModelProto``: Table 1's layers as ONNX operators, NCHW inside,
    from the same walk over the spec as the model (``Spec.layers``).

    fc6-8 are convolutions (fc6 one of its k x k window, fc7 and fc8 1x1), then a global
    average pool: at the crop size the score map is 1x1 and this is the plain classifier; on
    larger images it is the paper's dense evaluation, as ``VGG(dense=True)`` computes it.
    """
    from onnx import TensorProto, helper, numpy_helper

    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    stats = jax.tree_util.tree_map(np.asarray, variables.get("batch_stats", {}))
    spec = models.get_spec(record.arch)
    nodes, weights = [], []

    def const(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list, name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(x: str, name: str, kernel_hwio: np.ndarray, bias: np.ndarray, pad: bool) -> str:
        kh, kw = kernel_hwio.shape[:2]
        pads = [kh // 2, kw // 2, kh // 2, kw // 2] if pad else [0, 0, 0, 0]
        return node("Conv", [x, const(f"{name}.kernel", kernel_hwio.transpose(3, 2, 0, 1)),
                             const(f"{name}.bias", bias)], name,
                    kernel_shape=[kh, kw], pads=pads)

    x = node("Cast", ["images"], "images_float", to=TensorProto.FLOAT)
    x = node("Sub", [x, const("mean_rgb", np.asarray(record.mean_rgb))], "centred")
    x = node("Div", [x, const("std_rgb", np.asarray(record.std_rgb))], "normalised")
    x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    for layer in spec.layers():
        if layer.kind == "conv":
            p = params[layer.name]
            x = conv(x, layer.name, p["kernel"], p["bias"], pad=True)
            if spec.batch_norm:
                bn, s = params[layer.norm], stats[layer.norm]
                x = node("BatchNormalization",
                         [x, const(f"{layer.norm}.scale", bn["scale"]),
                          const(f"{layer.norm}.bias", bn["bias"]),
                          const(f"{layer.norm}.mean", s["mean"]),
                          const(f"{layer.norm}.var", s["var"])], layer.norm, epsilon=1e-5)
            x = node("Relu", [x], layer.name.replace("conv", "relu", 1))
        elif layer.kind == "lrn":  # ONNX's LRN is Caffe's: alpha / size times the window sum
            x = node("LRN", [x], layer.name, size=5, alpha=1e-4, beta=0.75, bias=2.0)
        else:
            x = node("MaxPool", [x], layer.name, kernel_shape=[2, 2], strides=[2, 2])
    fc6 = params["fc6"]
    channels = params[models.layer_names(record.arch)[-1]]["kernel"].shape[-1]
    window = models.fc6_window(record.arch, params)
    x = conv(x, "fc6", fc6["kernel"].reshape(window, window, channels, -1), fc6["bias"], False)
    x = node("Relu", [x], "relu6")
    for layer in ("fc7", "fc8"):
        x = conv(x, layer, params[layer]["kernel"][None, None], params[layer]["bias"], False)
        x = node("Relu", [x], "relu7") if layer == "fc7" else x
    x = node("GlobalAveragePool", [x], "score_mean")
    x = node("Flatten", [x], "logits" if iface.logits else "scores", axis=1)
    if not iface.logits:
        x = node("Softmax", [x], "probabilities", axis=1)
    batch = iface.batch or "batch"
    graph = helper.make_graph(
        nodes, record.arch,
        [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                       [batch, iface.image_size, iface.image_size, 3])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, record.num_classes])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="vgg_jax")
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    helper.set_model_props(model, {"class_names": json.dumps(list(names)),
                                   "arch": record.arch,
                                   "mean_rgb": json.dumps(list(record.mean_rgb)),
                                   "std_rgb": json.dumps(list(record.std_rgb))})
    return model


def _onnx(record, variables, iface, out, names) -> None:
    import onnx
    model = onnx_graph(record, variables, iface, names)
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, ARTEFACTS["onnx"]))


def export(record: ModelRecord, variables: dict, iface: Interface, out: str,
           source: str = "") -> str:
    """Writes ``iface.format``'s artefact with ``labels.txt`` and ``export.json`` to ``out``.

    ``out`` must not exist; it appears only once complete. Returns ``out``.
    """
    if os.path.exists(out):
        raise UserError(f"{out} exists already: choose another --out, or delete it first.")
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        _write(record, variables, iface, partial, source)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    os.replace(partial, out)
    return out


def _write(record: ModelRecord, variables: dict, iface: Interface, partial: str,
           source: str) -> None:
    names = class_names(record)
    with open(os.path.join(partial, "labels.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in names))
    serve = serving_function(record, iface)
    if iface.format == "onnx":
        _onnx(record, variables, iface, partial, names)
    else:
        {"stablehlo": _stablehlo, "savedmodel": _savedmodel,
         "tflite": _tflite}[iface.format](serve, variables, iface, partial)
    meta = dict(dataclasses.asdict(iface), artefact=ARTEFACTS[iface.format],
                input=dict(name="images", dtype="uint8", shape=list(iface.input_shape())),
                output=dict(name=iface.output, dtype="float32",
                            shape=[iface.batch or None, record.num_classes]),
                model=record.to_meta(), class_names=list(names), source=source)
    with open(os.path.join(partial, "export.json"), "w") as f:
        json.dump(meta, f, indent=1)


def load(out: str) -> Callable[[np.ndarray], np.ndarray]:
    """Runs the artefact in ``out`` with its own runtime: uint8 images -> (N, classes)."""
    with open(os.path.join(out, "export.json")) as f:
        meta = json.load(f)
    fmt, path = meta["format"], os.path.join(out, meta["artefact"])
    if fmt == "stablehlo":
        with open(path, "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        return lambda images: np.asarray(exported.call(images))
    if fmt == "savedmodel":
        import tensorflow as tf
        signature = tf.saved_model.load(out).signatures["serving_default"]
        return lambda images: signature(images=tf.constant(images))[meta["output"]["name"]].numpy()
    if fmt == "tflite":
        import tensorflow as tf
        with warnings.catch_warnings():  # "use ai_edge_litert": the same interpreter
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_path=path)

        def run_tflite(images):
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, images.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, images)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
        return run_tflite
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})[0]


def parity_images(iface: Interface, count: int = 4, seed: int = 0) -> np.ndarray:
    """Random uint8 images in the interface's shape (its batch, or ``count`` if symbolic)."""
    n = iface.batch or count
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, iface.image_size, iface.image_size, 3), dtype=np.uint8)


def reference(record: ModelRecord, variables: dict, iface: Interface,
              images: np.ndarray) -> np.ndarray:
    """What the exported graph should give: the net's own ``model.apply``, jit-compiled."""
    model = record.build()
    mean, std = np.float32(record.mean_rgb), np.float32(record.std_rgb)
    out = jax.jit(lambda v, x: model.apply(v, (x - mean) / std, dense=iface.dense))(
        variables, images.astype(np.float32))
    out = np.asarray(out, np.float32)
    return out if iface.logits else np.asarray(jax.nn.softmax(out, axis=-1))

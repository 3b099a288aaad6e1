"""Pretrained weights: torchvision and Keras conversion, predict, fine-tuning, bad files."""

import os
import pickle
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from vgg_jax.store import convert, weight_files
from vgg_jax.inference import evaluate, predict
from vgg_jax import models
from vgg_jax.training import train
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

from conftest import ROOT
from torch_files import torchvision_forward, torchvision_state_dict, write_pth

TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])


def relative_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def converted(source: str, arch: str, path: str, out: str) -> evaluate.Net:
    convert.write(*convert.convert(source, arch, path), out)
    return evaluate.Net.load(out)


def our_outputs(net: evaluate.Net, images: np.ndarray) -> np.ndarray:
    """The net's raw outputs (logits, or pool5 maps when headless) with its own preprocessing."""
    x = (images - np.array(net.record.mean_rgb)) / np.array(net.record.std_rgb)
    return np.asarray(net.model.apply(net.variables, x.astype(np.float32)))


def photos(tmp_path) -> list[str]:
    """Two real photographs shipped with matplotlib (JPEG and PNG)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    return [str(cbook.get_sample_data(name, asfileobj=False))
            for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg16", "vgg16_bn"])
def test_torchvision_state_dict_matches_numpy_nchw_forward(arch, tmp_path):
    state = torchvision_state_dict(arch, np.random.default_rng(0))
    write_pth(str(tmp_path / f"{arch}.pth"), state)
    net = converted("torchvision", arch, str(tmp_path / f"{arch}.pth"), str(tmp_path / "ckpt"))
    assert models.count_params(net.variables["params"]) == \
        {"vgg16": 138_357_544, "vgg16_bn": 138_365_992}[arch]
    images = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3))
    nchw = ((images / 255 - TORCH_MEAN) / TORCH_STD).transpose(0, 3, 1, 2)
    reference = torchvision_forward(state, arch, nchw)
    assert relative_error(our_outputs(net, images), reference) < 1e-4
    if importlib_util_has("torchvision"):  # and against torch itself when it is installed
        import torch
        import torchvision
        model = getattr(torchvision.models, arch)().eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        with torch.no_grad():
            theirs = model(torch.from_numpy(nchw.astype(np.float32))).numpy()
        assert relative_error(our_outputs(net, images), theirs) < 1e-4


def importlib_util_has(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_pth_formats_and_safetensors_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    state = {"features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "features.1.num_batches_tracked": np.array(7, np.int64),
             "half": rng.standard_normal(5).astype(np.float16)}
    write_pth(str(tmp_path / "zip.pth"), state)
    write_pth(str(tmp_path / "legacy.pth"), state, legacy=True)
    import json
    header, body, offset = {}, b"", 0
    for k, v in state.items():
        kind = {np.float32: "F32", np.int64: "I64", np.float16: "F16"}[v.dtype.type]
        header[k] = {"dtype": kind, "shape": list(v.shape),
                     "data_offsets": [offset, offset + v.nbytes]}
        body, offset = body + v.tobytes(), offset + v.nbytes
    blob = json.dumps(header).encode()
    with open(tmp_path / "w.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob + body)
    for name in ("zip.pth", "legacy.pth", "w.safetensors"):
        read = weight_files.read(str(tmp_path / name))
        assert list(read) == list(state)
        for k in state:
            assert read[k].dtype == state[k].dtype and read[k].shape == state[k].shape
            np.testing.assert_array_equal(read[k], state[k])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"features.0.weight": _Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"refusing (posix|os|nt)\.system"):
        weight_files.read(str(path))
    result = subprocess.run([sys.executable, "-m", "vgg_jax.convert", "--from", "torchvision",
                             "--arch", "vgg16", str(path), "--out", str(tmp_path / "out")],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "refusing" in result.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def keras_model(arch: str, **kwargs):
    import keras
    keras.utils.set_random_seed(0)
    build = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[arch]
    return build(weights=None, classifier_activation=None, **kwargs)


def save_legacy_h5(model, path: str) -> None:
    """The layout of Keras's published ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``."""
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def keras_outputs(model, images: np.ndarray, arch: str) -> np.ndarray:
    import keras
    module = {"vgg16": keras.applications.vgg16, "vgg19": keras.applications.vgg19}[arch]
    return np.asarray(model(module.preprocess_input(images.copy()), training=False))


@pytest.mark.slow
@pytest.mark.parametrize("arch, size, fmt", [("vgg16", 224, "legacy"), ("vgg19", 64, "keras3")])
def test_keras_logits_match(arch, size, fmt, tmp_path):
    classes = 1000 if size == 224 else 10
    model = keras_model(arch, input_shape=(size, size, 3), classes=classes)
    path = str(tmp_path / (f"{arch}.h5" if fmt == "legacy" else f"{arch}.weights.h5"))
    save_legacy_h5(model, path) if fmt == "legacy" else model.save_weights(path)
    net = converted("keras", arch, path, str(tmp_path / "ckpt"))
    assert (net.record.num_classes, net.record.image_size) == (classes, size)
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    assert relative_error(our_outputs(net, images), keras_outputs(model, images, arch)) < 1e-4


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_keras_notop_feature_maps_match(arch, tmp_path):
    model = keras_model(arch, include_top=False, input_shape=(64, 96, 3))
    save_legacy_h5(model, str(tmp_path / "notop.h5"))
    net = converted("keras", arch, str(tmp_path / "notop.h5"), str(tmp_path / "ckpt"))
    assert net.record.include_top is False
    images = np.random.default_rng(2).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    ours = our_outputs(net, images)
    assert ours.shape == (2, 2, 3, 512)
    assert relative_error(ours, keras_outputs(model, images, arch)) < 1e-4


@pytest.fixture(scope="module")
def small_imagenet_net(tmp_path_factory) -> str:
    """A Keras VGG-16 for 32x32 inputs and ImageNet's 1000 classes, converted."""
    tmp = tmp_path_factory.mktemp("keras32")
    save_legacy_h5(keras_model("vgg16", input_shape=(32, 32, 3)), str(tmp / "vgg16_32.h5"))
    out = str(tmp / "ckpt")
    convert.write(*convert.convert("keras", "vgg16", str(tmp / "vgg16_32.h5")), out)
    return out


@pytest.mark.slow
def test_predict_prints_sorted_top5_and_reports_bad_files(small_imagenet_net, tmp_path):
    jpg, png = photos(tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "vgg_jax.predict", "--checkpoint",
                             small_imagenet_net, jpg, str(bad), png],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "notes.jpg" in result.stderr and "not a readable image" in result.stderr
    names = set(predict.class_names(ModelRecord(arch="vgg16")))
    assert len(names) == 1000 and "goldfish, Carassius auratus" in names
    lines = result.stdout.strip().splitlines()
    assert [line for line in lines if not line.startswith(" ")] == \
        [f"{jpg} (single, Q=36)", f"{png} (single, Q=36)"]
    for block in (lines[1:6], lines[7:12]):
        probs = [float(line.split()[0]) for line in block]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(line.split(None, 1)[1] in names for line in block)


@pytest.mark.slow
def test_predict_dense_agrees_with_evaluator(small_imagenet_net, tmp_path):
    jpg, _ = photos(tmp_path)
    net = evaluate.Net.load(small_imagenet_net)
    image = predict.rescaled(jpg, [36, 48])
    top = predict.predict(net, [image], "dense", top=5)[0]
    evaluator = evaluate.Evaluator([net], ["dense"], [36, 48], 32, net.record.mean_rgb,
                                   net.record.std_rgb, 1)
    evaluator.add(0, image)
    probs = evaluator.results()["dense"][0]
    assert [c for c, _ in top] == list(np.argsort(-probs, kind="stable")[:5])
    assert top[0][1] == pytest.approx(probs.max())


@pytest.mark.slow
def test_fine_tune_from_converted_keeps_features_and_renews_head(small_imagenet_net, tiny_config,
                                                                  tmp_path, caplog):
    c = tiny_config
    c.arch, c.width, c.fc_width, c.dropout_rate = "vgg16", 1.0, 0, 0.5
    c.init_from = small_imagenet_net
    c.freeze = "conv.*|fc6|fc7"
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 2, 2
    workdir = str(tmp_path / "finetune")
    with caplog.at_level("WARNING"):
        train.train_and_evaluate(c, workdir)
    assert any("re-initialising" in r.getMessage() for r in caplog.records)
    source = evaluate.Net.load(small_imagenet_net)
    tuned = evaluate.Net.load(workdir)
    assert tuned.record.mean_rgb == source.record.mean_rgb  # Keras's Caffe preprocessing
    assert tuned.record.class_names == ("blue_cross", "green_bar", "red_disc")
    for layer, params in source.variables["params"].items():
        if layer == "fc8":
            assert tuned.variables["params"]["fc8"]["kernel"].shape == (4096, 3)
        else:  # loaded, then frozen
            for name, value in params.items():
                np.testing.assert_array_equal(tuned.variables["params"][layer][name], value)


def test_freeze_pattern_must_match_a_layer(tiny_config, tmp_path):
    tiny_config.freeze = "conv9.*"
    with pytest.raises(UserError, match="matches no layer"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "run"))


@pytest.mark.slow
def test_wrong_architecture_names_key_shapes_and_the_right_arch(tmp_path):
    model = keras_model("vgg16", include_top=False, input_shape=(32, 32, 3))
    save_legacy_h5(model, str(tmp_path / "vgg16_notop.h5"))
    with pytest.raises(UserError, match=r"block4_conv1/0 has shape \(3, 3, 256, 512\), vgg19 "
                                        r"needs \(3, 3, 256, 256\).*pass --arch vgg16"):
        convert.convert("keras", "vgg19", str(tmp_path / "vgg16_notop.h5"))
    state = {k: v for k, v in torchvision_state_dict("vgg11", np.random.default_rng(0)).items()
             if k.startswith("features")}
    write_pth(str(tmp_path / "vgg11_features.pth"), state)
    with pytest.raises(UserError, match=r"features\.2\.weight is missing.*pass --arch vgg11"):
        convert.convert("torchvision", "vgg13", str(tmp_path / "vgg11_features.pth"))


@pytest.mark.slow
def test_truncated_files_and_existing_output(tmp_path):
    state = {k: v for k, v in torchvision_state_dict("vgg11", np.random.default_rng(0)).items()
             if k.startswith("features")}
    good = str(tmp_path / "vgg11.pth")
    write_pth(good, state)
    for name, source in (("cut.pth", good),):
        data = open(source, "rb").read()
        with open(tmp_path / name, "wb") as f:
            f.write(data[: len(data) // 2])
        with pytest.raises(UserError, match="truncated"):
            weight_files.read(str(tmp_path / name))
    save_legacy_h5(keras_model("vgg16", include_top=False, input_shape=(32, 32, 3)),
                   str(tmp_path / "k.h5"))
    data = open(tmp_path / "k.h5", "rb").read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="truncated"):
        convert.convert("keras", "vgg16", str(tmp_path / "cut.h5"))
    out = str(tmp_path / "out")
    convert.write(*convert.convert("torchvision", "vgg11", good), out)
    before = sorted(os.listdir(os.path.join(out, "checkpoints")))
    with pytest.raises(UserError, match="already holds checkpoints"):
        convert.write(*convert.convert("torchvision", "vgg11", good), out)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == before
    assert evaluate.read_record(out).include_top is False


def test_every_cut_of_a_pth_file_is_named_truncated(tmp_path):
    """A .pth cut anywhere (a download stopped early) says so; a non-torch file says that."""
    state = {"features.0.weight": np.ones((4, 3, 3, 3), np.float32),
             "features.0.bias": np.zeros(4, np.float32)}
    for legacy in (False, True):
        whole = tmp_path / f"whole_{legacy}.pth"
        write_pth(str(whole), state, legacy=legacy)
        data = whole.read_bytes()
        cut = tmp_path / "cut.pth"
        for end in range(1, len(data), 37):
            cut.write_bytes(data[:end])
            with pytest.raises(UserError, match=r"is truncated") as info:
                weight_files.read(str(cut))
            assert "\n" not in str(info.value)
    png = tmp_path / "photo.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UserError, match="is not a PyTorch weight file"):
        weight_files.read(str(png))


@pytest.mark.slow
def test_no_released_weights_for_the_large_kernel_twins(tmp_path):
    good = str(tmp_path / "vgg13.pth")
    write_pth(good, torchvision_state_dict("vgg13", np.random.default_rng(0)))
    for arch in ("vgg13_5x5", "D-7x7"):
        with pytest.raises(UserError, match="No released weights exist for vgg1"):
            convert.convert("torchvision", arch, good)

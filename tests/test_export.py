"""Export: every format, run by its own runtime, gives what ``model.apply`` gives."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, draw
from vgg_jax.store import convert
from vgg_jax.inference import export
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

NAMES = ("disc", "bar", "cross", "ring", "dot")


def lively_net(arch: str, seed: int = 0, image_size: int = 32) -> tuple[ModelRecord, dict]:
    """A narrow random net whose every layer passes signal (BatchNorm with non-trivial
    statistics and positive shifts, so that ReLUs stay alive and the classes differ)."""
    record = ModelRecord(arch=arch, num_classes=len(NAMES), width=1 / 16, fc_width=24,
                         image_size=image_size, mean_rgb=(120.0, 110.0, 100.0),
                         std_rgb=(60.0, 55.0, 50.0), eval_scale=image_size + 4,
                         class_names=NAMES)
    model = record.build()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3)))
    rng = np.random.default_rng(seed)
    out = {"params": jax.tree_util.tree_map(np.asarray, variables["params"])}
    if "batch_stats" in variables:
        bn = {k: v for k, v in out["params"].items() if k.startswith("bn")}
        for layer in bn.values():
            layer["scale"] = rng.uniform(0.5, 1.5, layer["scale"].shape).astype(np.float32)
            layer["bias"] = rng.uniform(0.0, 0.3, layer["bias"].shape).astype(np.float32)
        out["batch_stats"] = {k: {"mean": rng.normal(0, 0.2, v["mean"].shape).astype(np.float32),
                                  "var": rng.uniform(0.5, 2.0, v["var"].shape).astype(np.float32)}
                              for k, v in variables["batch_stats"].items()}
    return record, out


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Checkpoints of a net with BatchNorm and one without (with LRN), as convert writes them."""
    root = tmp_path_factory.mktemp("export")
    paths = {}
    for arch in ("vgg11_bn", "vgg11_lrn"):
        record, variables = lively_net(arch)
        convert.write(variables, record, str(root / arch))
        paths[arch] = (str(root / arch), record, variables)
    return paths


def photos(n: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([draw(i % 3, rng, size) for i in range(n)])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("arch", ["vgg11_bn", "vgg11_lrn"])
def test_each_format_matches_model_apply_with_a_symbolic_batch(nets, fmt, arch, tmp_path):
    _, record, variables = nets[arch]
    iface = export.interface_for(record, fmt, batch=0)
    out = export.export(record, variables, iface, str(tmp_path / "out"))
    run = export.load(out)
    for n in (3, 1):  # a symbolic batch takes any size
        images = photos(n)
        want = export.reference(record, variables, iface, images)
        got = run(images)
        assert got.shape == (n, len(NAMES))
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert np.allclose(got.sum(axis=1), 1, atol=1e-5)
    assert np.ptp(want) > 1e-3  # the classes' probabilities differ: a real comparison
    assert open(os.path.join(out, "labels.txt")).read().split() == list(NAMES)
    meta = json.load(open(os.path.join(out, "export.json")))
    assert meta["input"] == {"name": "images", "dtype": "uint8", "shape": [None, 32, 32, 3]}
    assert meta["output"]["name"] == "probabilities" and meta["class_names"] == list(NAMES)
    assert meta["model"]["mean_rgb"] == [120.0, 110.0, 100.0]


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_fixed_batch_logits_and_dense_evaluation(nets, fmt, tmp_path):
    """A larger input exports the paper's dense evaluation; --logits skips the soft-max."""
    _, record, variables = nets["vgg11_bn"]
    iface = export.interface_for(record, fmt, batch=2, logits=True, image_size=64)
    assert iface.dense
    out = export.export(record, variables, iface, str(tmp_path / "out"))
    images = photos(2, 64)
    got = export.load(out)(images)
    want = export.reference(record, variables, iface, images)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    assert not np.allclose(got.sum(axis=1), 1)  # logits, not probabilities


def test_onnx_carries_class_names_and_savedmodel_its_labels(nets, tmp_path):
    import onnx
    _, record, variables = nets["vgg11_lrn"]
    out = export.export(record, variables, export.interface_for(record, "onnx"),
                        str(tmp_path / "onnx"))
    props = {p.key: p.value for p in onnx.load(os.path.join(out, "model.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == list(NAMES) and props["arch"] == "vgg11_lrn"
    out = export.export(record, variables, export.interface_for(record, "savedmodel"),
                        str(tmp_path / "sm"))
    assert os.path.exists(os.path.join(out, "assets", "labels.txt"))


def test_bad_input_is_refused_before_any_work(nets, tmp_path, monkeypatch):
    path, record, variables = nets["vgg11_bn"]
    with pytest.raises(UserError, match="unknown export format 'keras'"):
        export.interface_for(record, "keras")
    with pytest.raises(UserError, match="smaller than the checkpoint's crop 32"):
        export.interface_for(record, "onnx", image_size=24)
    with pytest.raises(UserError, match="--batch -1"):
        export.interface_for(record, "onnx", batch=-1)
    headless = ModelRecord(arch="vgg11", include_top=False)
    with pytest.raises(UserError, match="without its classifier"):
        export.interface_for(headless, "onnx")
    monkeypatch.setitem(export.PACKAGES, "onnx", ("no_such_package_for_vgg_jax",))
    with pytest.raises(UserError, match=r"install the export extra \(pip install -e \"\.\[export\]\"\)"):
        export.check_packages("onnx")
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists already"):
        export.export(record, variables, export.interface_for(record, "onnx"), str(existing))
    assert (existing / "keep.txt").read_text() == "mine"

    def broken(*args):
        raise RuntimeError("converter crashed")
    monkeypatch.setattr(export, "_onnx", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export(record, variables, export.interface_for(record, "onnx"),
                      str(tmp_path / "new"))
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no half-written folder left


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vgg_jax.export", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_exports_and_checks_parity(nets, tmp_path):
    path, _, _ = nets["vgg11_bn"]
    res = _cli(f"--checkpoint={path}", "--format=onnx", f"--out={tmp_path / 'm'}", "--batch=0")
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    assert "onnx export of vgg11_bn (probabilities, input Nx32x32x3 uint8)" in line
    assert float(line.rsplit(" ", 1)[1]) < 1e-4
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no .partial left behind


@pytest.mark.parametrize("args, message", [
    (["--format=keras"], "unknown --format 'keras': use one of stablehlo, savedmodel"),
    (["--format=onnx", "--checkpoint=/nonexistent/run"], "No checkpoint in"),
    (["--format=onnx", "--image_size=16"], "smaller than the checkpoint's crop 32"),
])
@pytest.mark.slow
def test_cli_bad_input_gets_one_error_line(nets, tmp_path, args, message):
    path, _, _ = nets["vgg11_bn"]
    res = _cli(f"--checkpoint={path}", f"--out={tmp_path / 'm'}", *args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and message in errors[0], res.stderr[-1500:]
    assert not os.path.exists(tmp_path / "m")

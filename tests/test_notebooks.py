"""Every notebook runs top to bottom in its small mode (papermill sets SMALL = True), and the
numbers it prints in its last cell are the ones a reader relies on."""

import json
import os

import pytest

from conftest import ROOT

TABLE2_EXACT = {"A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848, "C": 133_638_952,
                "D": 138_357_544, "E": 143_667_240}


def run_notebook(name: str, tmp_path, **parameters) -> dict:
    """Executes notebooks/<name>.ipynb with SMALL = True; returns its KEY_NUMBERS."""
    papermill = pytest.importorskip("papermill")
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), str(out),
                               parameters={"SMALL": True, **parameters}, cwd=ROOT,
                               kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    last = [c for c in nb["cells"] if "results" in c.get("metadata", {}).get("tags", [])][-1]
    text = "".join("".join(o.get("text", "")) for o in last["outputs"])
    return json.loads(text.split("KEY_NUMBERS ", 1)[1])


NOTEBOOKS = ("architecture", "train", "ablations", "pretrained", "explain")


def _load(name: str) -> dict:
    with open(os.path.join(ROOT, "notebooks", f"{name}.ipynb")) as f:
        return json.load(f)


def test_notebooks_are_colab_ready():
    """An install cell, a parameters cell, no local paths in the code."""
    for name in NOTEBOOKS:
        nb = _load(name)
        sources = ["".join(c["source"]) for c in nb["cells"]]
        assert any('"clone"' in s and '"pip"' in s for s in sources), name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])
        assert not any("/work/" in s or "/tmp/" in s or "/root/" in s for s in sources), name


def test_notebooks_are_committed_executed_with_their_figures():
    """notebooks/execute.py ran every cell in order, none failed, and the figures are there."""
    for name in NOTEBOOKS:
        code = [c for c in _load(name)["cells"] if c["cell_type"] == "code"]
        assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), name
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], name
        assert any("image/png" in o.get("data", {}) for o in outputs), name
        assert "KEY_NUMBERS" in "".join("".join(o.get("text", "")) for o in code[-1]["outputs"])


@pytest.mark.slow
def test_architecture_notebook(tmp_path):
    numbers = run_notebook("architecture", tmp_path)
    assert numbers["params"] == TABLE2_EXACT
    assert numbers["gmacs"]["D"] == 15.47
    assert numbers["vgg16_fc_params"] == 123_642_856
    assert [numbers[f"rf_{n}x3x3"] for n in (1, 2, 3)] == [3, 5, 7]
    assert numbers["rf_vgg16"]["pool5"] == 212
    twins = numbers["twins"]  # the large-kernel twins, computed from the models
    assert (twins["B-5x5"]["params"], twins["B-5x5"]["macs"]) == (134_503_528, 9_356_017_664)
    assert (twins["D-7x7"]["params"], twins["D-7x7"]["macs"]) == (144_727_144, 15_521_644_544)
    assert twins["B"]["conv_relus"] == twins["B-5x5+1x1"]["conv_relus"] == 10
    assert twins["B-5x5"]["conv_relus"] == twins["D-7x7"]["conv_relus"] == 5
    spread = numbers["erf_spread_init"]
    assert set(spread) == {"B", "B-5x5", "D", "D-7x7"} and all(0 < s < 32 for s in spread.values())
    # A stack of 3x3 concentrates on the centre; one large kernel spreads over its field.
    assert spread["B-5x5"] > spread["B"] and spread["D-7x7"] > spread["D"]


@pytest.mark.slow
def test_train_notebook(tmp_path):
    numbers = run_notebook("train", tmp_path, WORKDIR=str(tmp_path / "run"),
                           DATA_DIR=str(tmp_path / "tfds"))
    assert numbers["step"] == 60
    assert numbers["last_train_loss"] < numbers["first_train_loss"]
    assert {"train_loss", "train_top1", "eval_loss", "eval_top1"} <= set(numbers["tags"])


@pytest.mark.slow
def test_ablations_notebook(tmp_path):
    numbers = run_notebook("ablations", tmp_path)
    depth = numbers["depth_top1_err"]
    assert [label.split()[0] for label in depth] == ["A", "B", "C", "D", "E"]
    assert all(0 < err <= 100 for err in depth.values()) and depth["A (11)"] < 50
    assert numbers["studies_run"] == ["depth", "lrn", "conv1x1", "scale", "init", "batchnorm",
                                      "kernel", "recipe", "precision"]
    assert 0 < numbers["top1_err"]["recipe"]["paper"] < 50  # the base recipe trains
    precision = numbers["top1_err"]["precision"]  # bfloat16 costs no accuracy
    assert abs(precision["bfloat16"] - precision["float32"]) < 1.0
    kernel = numbers["top1_err"]["kernel"]  # the 3x3 pairs of B train (B-5x5: see ablations.md)
    assert 0 < kernel["B"] < 50
    init = numbers["top1_err"]["init"]  # transfer from A trains E; Glorot alone does not
    assert init["E, Glorot"] == 90.0 and init["E from A"] < 50


@pytest.mark.slow
def test_pretrained_notebook(tmp_path):
    numbers = run_notebook("pretrained", tmp_path, WORKDIR=str(tmp_path / "run"),
                           DATA_DIR=str(tmp_path / "tfds"))
    assert len(numbers["top5"]) == 5
    probs = [p for _, p in numbers["top5"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    assert numbers["map_shape"] == [3, 3, 10]  # Q = 96 on a 32-crop net: 3x3 positions
    assert numbers["feature_shapes"]["pool1"] == [16, 16, 16]
    assert numbers["feature_shapes"]["pool5"] == [1, 1, 128]


@pytest.mark.slow
def test_explain_notebook(tmp_path):
    numbers = run_notebook("explain", tmp_path, WORKDIR=str(tmp_path / "run"),
                           DATA_DIR=str(tmp_path / "tfds"))
    assert set(numbers["export"]) == {"stablehlo", "savedmodel", "tflite", "onnx"}
    assert all(d < 1e-4 for d in numbers["export"].values())  # each runtime = model.apply
    assert all(s == 1.0 for s in numbers["export_same_top1"].values())
    assert set(numbers["localisation"]) == {"gradcam", "saliency", "smoothgrad",
                                            "integrated-gradients"}
    assert all(0 <= r["share_above_1"] <= 1 for r in numbers["localisation"].values())
    assert all(-1 <= c < 0.6 for c in numbers["randomisation"].values())

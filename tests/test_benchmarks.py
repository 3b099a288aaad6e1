"""The speed suite runs end to end at toy size and reports what the issue asks of it."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from vgg_jax.compute import onednn

from conftest import ROOT


def _smoke(script: str, out) -> str:
    """Runs ``benchmarks/<script>.py --smoke``; returns its markdown, checking its plot."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{script}.py"),
                           "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / f"{script}.png").stat().st_size > 5000
    return (out / f"{script}.md").read_text()


@pytest.mark.slow
def test_speed_suite_smoke(tmp_path):
    """vgg_jax, Keras (and PyTorch where installed) side by side: images/s, utilisation,
    compile time, memory, ratios, the pipeline ratio, a table and a plot."""
    md = _smoke("speed", tmp_path)
    assert re.search(r"float32 \d+ GFLOP/s \(XLA\)", md)
    rows = [line for line in md.splitlines() if line.startswith("| A | 32 | 4 |")]
    assert len(rows) == 4  # float32 and bfloat16, train and infer
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[5]) > 0 and cells[7].endswith("%") and float(cells[8]) > 0
        assert float(cells[9]) > 0.1  # peak RSS, GiB
    fp32 = [r for r in rows if "| float32 |" in r]
    for row in fp32:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[14].endswith("x") and float(cells[14][:-1]) > 0  # vgg_jax / Keras
        if importlib.util.find_spec("torch"):
            assert cells[11].endswith("x") and float(cells[11][:-1]) > 0
    if not importlib.util.find_spec("torch"):
        assert 'pytorch: not installed (pip install -e ".[bench]")' in md
    assert re.search(r"input pipeline \(\d+ img/s/core x \d+ cores\) keeps up", md)


def test_table_figures_keep_small_measurements_nonzero():
    """A toy shape on a slow machine measures 0.04 ms or 0.5 GFLOP/s: a table must not print
    it as 0 (which once failed CI's smoke test)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from results_table import figure
    assert [figure(v) for v in (0.0412, 0.5, 4.0, 24.31, 355.2, 1420.4)] == [
        "0.0412", "0.5", "4", "24.3", "355", "1420"]


@pytest.mark.slow
def test_speed_rounds_give_medians_and_each_rounds_ratio():
    """--rounds: one row per framework and case with the median rate, and vgg_jax's ratio
    to the others round by round (the load of a shared machine drifts between processes)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import speed
    case = dict(arch="vgg16", size=224, batch=8, dtype="float32", mode="train", width=1.0,
                first_call_s=1.0)
    rates = {"vgg_jax": (2.0, 3.0, 2.5), "pytorch": (1.0, 2.0, 1.25)}
    results = [{**case, "framework": fw, "round": i, "images_per_s": rate,
                "peak_rss_gib": 2.0 + i}
               for fw, values in rates.items() for i, rate in enumerate(values)]
    combined, ratios = speed.combine(results)
    assert {r["framework"]: (r["images_per_s"], r["peak_rss_gib"]) for r in combined} == {
        "vgg_jax": (2.5, 4.0), "pytorch": (1.25, 4.0)}
    assert ratios == {("pytorch", "vgg16", 224, 8, "float32", "train"): [2.0, 1.5, 2.0]}
    md, rows = speed.report(results, {"float32": 1e11, "bfloat16": 1e11}, None, {}, "cmd", 60)
    assert rows[0]["pytorch_ratio"] == 2.0 and "3 rounds, the frameworks taking turns" in md
    assert "| D | 224 | 8 | float32 | train | PyTorch | 2.00x, 1.50x, 2.00x | 1.50x | 2.00x |" in md
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"),
                           "--rounds", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--rounds must be at least 1" in proc.stderr


@pytest.mark.slow
def test_layer_benchmark_smoke(tmp_path):
    """Every convolution timed in XLA, oneDNN (where built) and PyTorch (where installed)
    and by Winograd, the second and last first checked against XLA; totals and the share of
    the step outside them."""
    md = _smoke("layers", tmp_path)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| conv")}
    assert list(rows) == [f"conv{n}" for n in
                          ("1_1", "2_1", "3_1", "3_2", "4_1", "4_2", "5_1", "5_2")]
    assert rows["conv1_1"][10] == "-" and float(rows["conv3_2"][10]) > 0  # Winograd after conv1_1
    if onednn.available():  # ... and the C++ one where the kernels are built
        assert rows["conv1_1"][12] == "-" and float(rows["conv3_2"][12]) > 0
    assert rows["conv5_1"][3] == "im2col / im2col" and rows["conv3_2"][3] == "xla / xla"
    assert all(float(r[4]) >= 0 and float(r[5]) >= 0 for r in rows.values())
    if onednn.available():
        assert all(float(r[6]) >= 0 and float(r[7]) >= 0 for r in rows.values())
    if importlib.util.find_spec("torch"):
        assert all(r[8] != "-" for r in rows.values())
    assert re.search(r"whole training step .* of which its convolutions alone take", md)


@pytest.mark.slow
def test_export_benchmark_smoke(tmp_path):
    """Formats exported, agreeing with model.apply, and timed against it. Two formats here:
    every format's export and runtime is tested in test_export.py; this checks the
    benchmark's own timing and table."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "export.py"),
                           "--arch", "vgg11_bn", "--image_size", "32", "--batch", "2",
                           "--rounds", "1", "--formats", "stablehlo,onnx",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in (tmp_path / "export.md").read_text().splitlines()
            if line.startswith("| 20")]
    assert [r[4] for r in rows] == ["vgg_jax model.apply (jit)", "jax.export",
                                    "onnxruntime (CPU)"]
    assert all(float(r[7]) < 1e-4 and float(r[8]) > 0 for r in rows[1:])
    assert rows[0][9] == "1.00x"


@pytest.mark.slow
def test_onednn_benchmark_smoke(tmp_path):
    """Both routes of each step timed side by side, with the kernel oneDNN chose; --fc and
    --input-gradient each compare their one part; two of them at once is refused."""
    from vgg_jax.compute import onednn
    if not onednn.available():
        import pytest
        pytest.skip("oneDNN kernels unavailable here")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "onednn.py"),
                           "--cases", "vgg11:32:4:0.125", "--rounds", "1", "--steps", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in (tmp_path / "onednn.md").read_text().splitlines()
            if line.startswith("| 20")]
    assert [(r[4], r[5]) for r in rows] == [("float32", "train"), ("float32", "infer"),
                                            ("bfloat16", "train"), ("bfloat16", "infer")]
    assert all(float(r[6]) > 0 and float(r[7]) > 0 and r[8].endswith("x") for r in rows)
    assert "avx" in rows[0][9] or "sse" in rows[0][9]  # a kernel for this CPU's ISA
    for flag, label in (("--fc", "float32 fc only"),
                        ("--input-gradient", "float32 input grad by XLA"),
                        ("--taps", "float32 taps")):
        one = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "onednn.py"),
                              flag, "--cases", "vgg11:32:4:0.125", "--dtypes", "float32",
                              "--rounds", "1", "--steps", "1", "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=600)
        assert one.returncode == 0, one.stderr[-3000:]
        assert [ln.split("|")[5].strip() for ln in one.stdout.splitlines()
                if ln.startswith("| 20")] == [label] * 2
    both = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "onednn.py"),
                           "--fc", "--kernel-gradient"], capture_output=True, text=True,
                          timeout=120)
    assert both.returncode != 0 and "pass one" in both.stderr


@pytest.mark.slow
def test_step_profile_names_the_thunks(tmp_path):
    """The profile of the trainer's step: its rate, time by thunk kind, the overlap table."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                           "--arch", "vgg11", "--size", "32", "--batch", "4", "--width", "0.0625",
                           "--dtype", "float32", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"step \d+ ms, [\d.]+ img/s \(vgg11 32/4", out)
    kinds = out.split("by kind")[1].split("\n\n")[0]
    assert re.search(r"^\s+[\d.]+\s+\w", kinds, re.M)  # at least one kind of thunk, timed
    assert "thunks running at once" in out and (tmp_path / "hlo.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(not onednn.available(), reason="oneDNN kernels not buildable here")
def test_onednn_ops_benchmark_smoke(tmp_path):
    """Each primitive (forward, input and kernel gradient) against XLA's and TensorFlow's
    (checked against oneDNN's result first), the kernel gradient also in oneDNN's blocked
    layout."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "onednn_ops.py"),
                           "--smoke", "--repeats", "1", "--tensorflow", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "onednn_ops.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| 2x")]
    assert [r[1] for r in rows] == ["forward", "backward_data", "backward_weights"] * 2
    assert all(float(r[2]) > 0 and float(r[3]) > 0 and r[4].endswith("x") and r[5]
               and float(r[8]) > 0 and r[9].endswith("x") for r in rows)
    assert all((float(r[6]) > 0 and r[7].endswith("x")) if r[1] == "backward_weights"
               else r[6] == r[7] == "" for r in rows)
    assert "TensorFlow 2." in md

"""The speed suite runs end to end at toy size and reports what the issue asks of it."""

import importlib.util
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_speed_suite_smoke(tmp_path):
    """vgg_jax, Keras (and PyTorch where installed) side by side: images/s, utilisation,
    compile time, memory, ratios, the pipeline ratio, a table and a plot."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"),
                           "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "speed.md").read_text()
    assert (tmp_path / "speed.png").stat().st_size > 5000
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

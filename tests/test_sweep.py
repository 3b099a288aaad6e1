"""The ablation runner: a cell of the committed depth study rerun at tiny scale, resuming,
divergence, bad input; and every study file's runs are valid configs."""

import csv
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

STUDIES = sorted(glob.glob(os.path.join(ROOT, "configs", "ablations", "*.py")))
STUDIES = [s for s in STUDIES if "def get_sweep" in open(s).read()]


def tiny_overrides(image_folder, tmp_path):
    """Command-line overrides that shrink a study's runs to seconds on the test images."""
    return [f"--config.dataset=imagefolder:{image_folder}", f"--config.data_dir={tmp_path}/tfds",
            "--config.num_classes=3", "--config.width=0.0625", "--config.fc_width=32",
            "--config.batch_size=8", "--config.eval_batch_size=8", "--config.num_train_steps=4",
            "--config.warmup_epochs=0", "--config.log_every_steps=2",
            "--config.checkpoint_every_steps=2", "--config.learning_rate=0.01"]


def sweep(args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "vgg_jax.sweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_depth_study_cell_reruns_and_resumes(image_folder, tmp_path):
    """``--only`` one cell of configs/ablations/depth.py: a result row, table and plot; a
    rerun skips the finished run and keeps its numbers."""
    workdir = tmp_path / "depth"
    args = ["--config=configs/ablations/depth.py", f"--workdir={workdir}", "--only=A__11_-seed0",
            *tiny_overrides(image_folder, tmp_path)]
    first = sweep(args)
    assert first.returncode == 0, first.stderr[-2000:]
    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["run"], r["status"], r["step"]) for r in rows] == \
        [("A (11)", "A__11_-seed0", "done", "4")]
    top1 = float(rows[0]["eval_top1"])
    assert 0.0 <= top1 <= 1.0
    assert json.loads(rows[0]["overrides"]) == {"arch": "vgg11", "seed": 0}
    table = (workdir / "results.md").read_text()
    assert "| A (11) | arch=vgg11 | 1 |" in table
    assert f"{100 * (1 - top1):.2f}" in table
    assert (workdir / "results.png").stat().st_size > 1000
    assert os.path.isdir(workdir / "A__11_-seed0" / "checkpoints" / "4")

    again = sweep(args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished before, skipped" in again.stderr
    assert "Training vgg11" not in again.stderr
    with open(workdir / "results.csv") as f:
        assert float(next(csv.DictReader(f))["eval_top1"]) == top1


@pytest.mark.slow
def test_seeds_average_and_divergence_is_recorded(tiny_config, tmp_path):
    """Two seeds of a setting give a mean and spread; a diverging run is a row, not a crash;
    an interrupted (unfinished) run resumes from its checkpoint."""
    from vgg_jax.training import sweep as sweep_lib
    tiny_config.num_train_steps = 4
    tiny_config.eval_every_steps = 0
    tiny_config.eval_every_epochs = 1000
    runs = [{"label": "A", "seed": 0}, {"label": "A", "seed": 1},
            {"label": "too fast", "learning_rate": 1e12}, {"label": "EMA", "ema_decay": 0.5}]
    workdir = str(tmp_path / "sweep")
    # An interrupted first run: a checkpoint at step 2, no result yet.
    partial = sweep_lib.run_config(tiny_config, runs[0])
    partial.num_train_steps = 2
    from vgg_jax.training import train
    train.train_and_evaluate(partial, os.path.join(workdir, "A-seed0"))
    rows = sweep_lib.execute(tiny_config, runs, workdir)
    assert [r["status"] for r in rows] == ["done", "done", "diverged", "done"]
    assert "eval_ema_top1" in rows[3] and "eval_ema_top1" not in rows[0]
    assert [r["step"] for r in rows[:2]] == [4, 4]
    summary = sweep_lib.summarize(rows)
    assert [(s["label"], s["runs"], s["diverged"]) for s in summary] == \
        [("A", 2, 0), ("too fast", 1, 1), ("EMA", 1, 0)]
    errors = [100 * (1 - r["eval_top1"]) for r in rows[:2]]
    assert summary[0]["top1_err"] == pytest.approx(sum(errors) / 2)
    assert summary[0]["top1_std"] == pytest.approx(abs(errors[0] - errors[1]) / 2 ** 0.5)
    curves = sweep_lib.loss_curves(rows, workdir)  # A-seed0's two event files joined
    assert [(label, steps) for label, steps, _ in curves[:2]] == [("A", [1, 2, 3, 4])] * 2
    paths = sweep_lib.write_results(rows, workdir, "test")
    md = open(paths["md"]).read()
    assert "| too fast | learning_rate=1000000000000.0 | 1 (1 diverged) | diverged |" in md
    ema_err = 100 * (1 - rows[3]["eval_ema_top1"])
    assert "| EMA top-1 error % |" in md and f"| {ema_err:.2f} |" in md


@pytest.mark.slow
def test_bad_sweep_input_is_one_line_before_work(image_folder, tmp_path):
    study = tmp_path / "study.py"
    study.write_text('"""A study with a typo."""\nfrom configs.ablations import cifar\n\n'
                     'def get_config():\n    return cifar.get_config()\n\n'
                     'def get_sweep():\n    return [{"label": "x", "arhc": "vgg13"}]\n')
    bad_field = sweep([f"--config={study}", f"--workdir={tmp_path}/w"])
    assert bad_field.returncode == 2
    assert bad_field.stderr.strip().splitlines()[-1] == (
        "error: Sweep run 'x' sets unknown config field 'arhc': the fields are listed in "
        "configs/default.py.")
    bad_only = sweep(["--config=configs/ablations/lrn.py", f"--workdir={tmp_path}/w",
                      "--only=B"])
    assert bad_only.returncode == 2
    assert "error: --only names ['B'], not in the sweep; its labels are ['A', 'A-LRN']." in \
        bad_only.stderr
    assert not os.path.exists(tmp_path / "w" / "x")


@pytest.mark.parametrize("study", STUDIES, ids=os.path.basename)
def test_every_study_is_a_valid_grid(study, tmp_path):
    """Each committed study names distinct runs whose overrides are real config fields, and
    init_from points at a run that trains earlier in the same sweep."""
    from vgg_jax import models
    from vgg_jax.training import sweep as sweep_lib
    import importlib.util
    spec = importlib.util.spec_from_file_location("study", study)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs, title = sweep_lib.load_sweep(study)
    assert title and len(runs) >= 2
    base = module.get_config()
    sweep_lib.check(base, runs)
    names = []
    for run in runs:
        config = sweep_lib.run_config(base, run, str(tmp_path))
        models.canonical_name(config.arch)
        if config.init_from:
            assert config.init_from.startswith(str(tmp_path))
            assert os.path.basename(config.init_from) in names
        names.append(sweep_lib.run_name(run))

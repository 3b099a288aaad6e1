"""The config schema: every field typed and bounded, every bad value one ``error:`` line
before any work, for training and for every other command-line tool."""

import os
import subprocess
import sys

import ml_collections
import pytest

from configs import default
from vgg_jax.training import schema, train

from conftest import ROOT

# Values each field must refuse: zero, negative and out-of-range numbers, unknown choices.
BAD_VALUES = {
    "arch": ["vgg17", ""], "num_classes": [0, -1], "width": [0.0, -0.5, 17.0],
    "fc_width": [-1], "dropout_rate": [-0.1, 1.0, 1.5], "initializer": ["xavier"],
    "init_std": [0.0, -0.01], "dtype": ["float64", "int8"], "dataset": [""],
    "train_split": [""], "eval_split": [" "], "image_size": [0, -32, 31],
    "train_scale_min": [0, -1, 31], "train_scale_max": [0, -1, 31], "eval_scale": [0, -1, 31],
    "train_crop": ["centre"], "pca_std": [-1.0], "mean_rgb": [(1.0, 2.0)],
    "std_rgb": [(1.0, 0.0, 1.0), (1.0, -1.0, 1.0)], "shuffle_buffer": [-1],
    "data_shards": [-1], "batch_size": [0, -8], "learning_rate": [0.0, -1.0],
    "lr_scaling": ["sqrt"], "momentum": [-0.1, 1.0, 1.5], "weight_decay": [-0.1],
    "schedule": ["linear"], "warmup_epochs": [-1.0], "lr_decay_factor": [0.0, -0.1, 1.5],
    "lr_decay_epochs": [(60.0, 30.0), (-1.0,)], "plateau_patience": [0, -1],
    "plateau_min_delta": [-0.1], "plateau_max_reductions": [-1], "num_epochs": [0.0, -1.0],
    "num_train_steps": [-1], "eval_every_epochs": [0.0, -1.0], "eval_every_steps": [-1],
    "eval_batch_size": [-1], "log_every_steps": [0, -1], "checkpoint_every_epochs": [0.0, -1.0],
    "checkpoint_every_steps": [-1], "keep_checkpoints": [0, -1], "seed": [-1],
    "freeze": ["conv(("], "transfer_guard": ["never"], "num_processes": [-1], "process_id": [-2],
    "cache": [1], "nesterov": ["yes"], "async_checkpoints": [0], "skip_nonfinite": [None],
    "optimizer": ["adam", "SGD"], "weight_decay_on": ["biases"], "adam_b1": [1.0, -0.1],
    "adam_b2": [1.5], "lars_trust_coefficient": [0.0], "grad_clip_norm": [-1.0],
    "grad_accum_steps": [0, -2], "label_smoothing": [-0.1, 1.0], "mixup_alpha": [-0.2],
    "cutmix_alpha": [-1.0], "mix_prob": [1.5, -0.5], "mix_switch_prob": [2.0],
    "randaugment_ops": [-1, 9], "randaugment_magnitude": [11.0, -1.0], "ema_decay": [1.0, -0.5],
    "init_from_ema": ["no"], "profile_steps": ["5", "20:10", "a:b", "3:3"],
}


def test_schema_covers_every_field_of_the_default_config():
    assert set(schema.FIELDS) == set(default.get_config())
    assert schema.problems(default.get_config()) == []
    numeric_or_choice = {name for name, f in schema.FIELDS.items()
                         if f.kind in (int, float) or f.choices or f.rule}
    assert numeric_or_choice <= set(BAD_VALUES), numeric_or_choice - set(BAD_VALUES)


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_every_bad_value_is_one_error_before_any_work(field, tiny_config, tmp_path):
    for value in BAD_VALUES[field]:
        # As a config file would write it (overrides are type-checked by ml_collections).
        config = ml_collections.ConfigDict({**tiny_config.to_dict(), field: value})
        workdir = tmp_path / "run"
        with pytest.raises(schema.ConfigError) as info:
            train.train_and_evaluate(config, str(workdir))
        assert len(info.value.problems) == 1, info.value.problems
        problem = info.value.problems[0]
        assert field in problem and "\n" not in problem
        if field != "arch" or value:
            assert repr(value) in problem, problem
        assert not workdir.exists() and not os.path.exists(config.data_dir)


def test_relations_and_unknown_fields(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.train_scale_min = 30 + 10  # above train_scale_max (36)
    assert schema.problems(config) == [
        "need image_size <= train_scale_min <= train_scale_max; got 32, 40, 36"]
    config.train_scale_min = 36
    config.grad_accum_steps = 3
    assert schema.problems(config) == [
        "batch_size 8 is not divisible by grad_accum_steps 3: use a multiple"]
    config.grad_accum_steps = 1
    with config.unlocked():
        config.lerning_rate = 0.1
    assert "unknown config field 'lerning_rate'" in schema.problems(config)[0]
    del config["lerning_rate"], config["seed"]
    assert any("config field 'seed' is missing" in p for p in schema.problems(config))


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_main_prints_one_error_line_per_bad_field(tmp_path):
    workdir = tmp_path / "w"
    res = _run("vgg_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
               f"--config.data_dir={tmp_path / 'tfds'}", "--config.batch_size=0",
               "--config.momentum=1.5", "--config.train_crop=centre")
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: train_crop='centre': train_crop must be one of 'scale', 'inception'",
        "error: batch_size=0: batch_size must be an integer >= 1",
        "error: momentum=1.5: momentum must be a number in [0, 1)"]
    assert "Traceback" not in res.stderr
    assert not workdir.exists() and not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("module,args,expected", [
    ("vgg_jax.evaluate", ["--checkpoint=/nowhere", "--config=configs/quickstart.py",
                          "--batch_size=0"], "--batch_size=0"),
    ("vgg_jax.evaluate", ["--checkpoint=/nowhere", "--config=configs/quickstart.py",
                          "--protocols=single,fancy"], "--protocols takes some of"),
    ("vgg_jax.evaluate", ["--checkpoint=/nowhere", "--config=configs/quickstart.py",
                          "--config.eval_scale=8"], "eval_scale=8: eval_scale must be"),
    ("vgg_jax.predict", ["--checkpoint=/nowhere", "--top=0", "x.jpg"], "--top=0"),
    ("vgg_jax.predict", ["--checkpoint=/nowhere", "--scales=abc", "x.jpg"],
     "--scales takes whole numbers"),
    ("vgg_jax.convert", ["--from=caffe", "--arch=vgg16", "--out=/tmp/x", "w.pth"], "--from"),
    ("vgg_jax.sweep", ["--config=configs/ablations/lrn.py", "--workdir=/nowhere/w",
                       "--config.momentum=2.0"], "momentum=2.0: momentum must be"),
    ("vgg_jax.data.stats", ["--dataset=vgg_shapes", "--max_images=0"], "--max_images=0"),
    ("vgg_jax.models", ["--image_size=8"], "--image_size=8"),
    ("vgg_jax.main", ["--config=configs/quickstart.py", "--workdir=/nowhere/w", "extra"],
     "unexpected arguments extra"),
])
@pytest.mark.slow
def test_every_tool_reports_bad_flags_in_one_line(module, args, expected):
    res = _run(module, *args)
    assert res.returncode == 2, (res.stdout[-1000:], res.stderr[-2000:])
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and expected in last, last
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_every_tool_has_help():
    for module in ("vgg_jax.main", "vgg_jax.evaluate", "vgg_jax.predict", "vgg_jax.convert",
                   "vgg_jax.sweep", "vgg_jax.data.stats", "vgg_jax.models"):
        res = _run(module, "--helpshort")
        assert res.returncode == 0 and "--" in res.stdout, (module, res.stderr[-1000:])

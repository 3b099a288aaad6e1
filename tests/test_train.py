"""train_and_evaluate end to end: learning, checkpoints, resume, devices, evaluation, bad input."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from vgg_jax.store import checkpoints, transfer
from vgg_jax.training import events, train
from vgg_jax.data import pipeline, sources
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

from conftest import ROOT


def scalars(workdir: str, tag: str) -> dict[int, float]:
    return events.read_scalars(workdir)[tag]


def final_params(workdir: str, which: str = "params") -> dict:
    """The last checkpoint's parameters (``which="ema"``: its moving averages)."""
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    raw = store.restore_raw()
    return raw["params"] if which == "params" else raw[which]


def assert_trees(a, b, **tol):
    import jax
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if tol:
            np.testing.assert_allclose(x, y, **tol)
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_end_to_end_learns_and_writes(tiny_config, tmp_path):
    tiny_config.arch = "vgg11_bn"
    tiny_config.num_train_steps = 30
    tiny_config.eval_every_steps = 30
    tiny_config.checkpoint_every_steps = 10
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(tiny_config, workdir)
    loss = scalars(workdir, "train_loss")
    assert len(loss) == 30
    first = np.mean([loss[s] for s in range(1, 6)])
    last = np.median([loss[s] for s in range(21, 31)])  # batches of 8: single steps are noisy
    assert last < 0.7 * first, (first, last)
    assert metrics["eval_count"] == 30 and metrics["step"] == 30
    assert 0.0 <= metrics["eval_top1"] <= metrics["eval_top5"] <= 1.0
    assert scalars(workdir, "eval_top1")[30] == pytest.approx(metrics["eval_top1"])
    assert min(scalars(workdir, "images_per_sec").values()) > 0
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    assert store.all_steps() == [10, 20, 30]
    assert store.record().arch == "vgg11_bn" and store.record().num_classes == 3


@pytest.mark.slow
def test_resume_continues_with_identical_state(tiny_config, tmp_path):
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(tiny_config, straight)
    resumed = str(tmp_path / "resumed")
    tiny_config.num_train_steps = 3  # stop right after the step-3 checkpoint
    train.train_and_evaluate(tiny_config, resumed)
    tiny_config.num_train_steps = 6
    train.train_and_evaluate(tiny_config, resumed)
    assert_trees(final_params(resumed), final_params(straight))
    loss_a, loss_b = scalars(straight, "train_loss"), scalars(resumed, "train_loss")
    assert sorted(loss_b) == list(range(1, 7))  # step 4 follows step 3, none repeated
    assert [loss_b[s] for s in range(4, 7)] == [loss_a[s] for s in range(4, 7)]


@pytest.mark.slow
def test_config_override_reaches_run(image_folder, tmp_path):
    workdir = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "vgg_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", f"--config.dataset=imagefolder:{image_folder}",
         f"--config.data_dir={tmp_path / 'tfds'}", "--config.eval_split=test",
         "--config.num_classes=3", "--config.width=0.0625", "--config.fc_width=16",
         "--config.batch_size=12", "--config.num_train_steps=2", "--config.log_every_steps=1"],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.load(open(workdir / "config.json"))
    assert saved["batch_size"] == 12 and saved["width"] == 0.0625 and saved["num_train_steps"] == 2
    assert "eval_count=30" in res.stdout and "step=2" in res.stdout
    assert "/orbax/" not in res.stderr  # orbax's per-file chatter is filtered out


def test_eval_counts_every_example_once(image_folder, tmp_path):
    builder = sources.get_builder(f"imagefolder:{image_folder}", str(tmp_path / "tfds"))
    sources.prepare(builder)
    kw = dict(local_batch=8, crop=32, scale=36, num_devices=2)
    n, batches = pipeline.eval_batches(builder, "test", **kw)
    batches = list(batches)
    assert n == len(batches) == 4  # 30 examples in batches of 8
    assert sum(b["mask"].sum() for b in batches) == 30
    assert batches[0]["images"].shape == (2, 4, 32, 32, 3)
    labels = np.concatenate([b["labels"].ravel()[b["mask"].ravel() > 0] for b in batches])
    assert np.bincount(labels).tolist() == [10, 10, 10]
    # Two processes: disjoint shares covering the split, the same number of batches each.
    shares = [list(pipeline.eval_batches(builder, "test", process_index=i, process_count=2,
                                         **kw)[1]) for i in range(2)]
    assert len(shares[0]) == len(shares[1]) == 2
    assert sum(b["mask"].sum() for share in shares for b in share) == 30


def _train_on_devices(devices: int, workdir, image_folder, data_dir) -> None:
    script = f"""
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={devices}"
import sys; sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from configs import default
from vgg_jax.training import train
c = default.get_config()
c.update(dict(arch="vgg11_bn", width=1/16, fc_width=32, num_classes=3, dropout_rate=0.0,
              dataset="imagefolder:{image_folder}", data_dir="{data_dir}", eval_split="test",
              image_size=32, train_scale_min=36, train_scale_max=36, eval_scale=36,
              mean_rgb=(60., 60., 60.), std_rgb=(60., 60., 60.), batch_size=16,
              eval_batch_size=16, shuffle_buffer=0,
              learning_rate=0.005, schedule="constant", num_train_steps=4, eval_every_steps=4,
              checkpoint_every_steps=4, log_every_steps=4))
print(train.train_and_evaluate(c, "{workdir}"))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_eight_devices_match_one(image_folder, tmp_path):
    data_dir = tmp_path / "tfds"
    _train_on_devices(1, tmp_path / "one", image_folder, data_dir)
    _train_on_devices(8, tmp_path / "eight", image_folder, data_dir)
    one = checkpoints.Checkpoints(str(tmp_path / "one" / "checkpoints"), read_only=True)
    eight = checkpoints.Checkpoints(str(tmp_path / "eight" / "checkpoints"), read_only=True)
    a, b = one.restore_raw(), eight.restore_raw()
    assert_trees(a["params"], b["params"], rtol=1e-5, atol=1e-6)
    assert_trees(a["batch_stats"], b["batch_stats"], rtol=1e-5, atol=1e-6)  # cross-replica BN


def _expect_user_error(config, workdir, match):
    with pytest.raises(UserError, match=match) as info:
        train.train_and_evaluate(config, workdir)
    assert "\n" not in str(info.value)


def test_bad_input_is_reported_before_work(tiny_config, tmp_path, image_folder):
    data_dir = tmp_path / "tfds"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _expect_user_error(tiny_config, str(blocker / "run"), "Cannot write to workdir")
    missing = tiny_config.copy_and_resolve_references()
    missing.dataset = "imagefolder:/no/such/folder"
    _expect_user_error(missing, str(tmp_path / "a"), r"does not exist: lay images out as")
    unknown = tiny_config.copy_and_resolve_references()
    unknown.dataset = "no_such_dataset"
    _expect_user_error(unknown, str(tmp_path / "a"), "Unknown data set 'no_such_dataset'")
    split = tiny_config.copy_and_resolve_references()
    split.eval_split = "validation"
    _expect_user_error(split, str(tmp_path / "a"), "Split 'validation' is not in image_folder")
    small = tiny_config.copy_and_resolve_references()
    small.image_size = small.train_scale_min = small.train_scale_max = small.eval_scale = 16
    _expect_user_error(small, str(tmp_path / "a"), r"height and width >= 32")
    assert not data_dir.exists()  # nothing was built for any of these


@pytest.mark.slow
def test_existing_checkpoints_and_init_from_are_checked(tiny_config, tmp_path):
    source = str(tmp_path / "source")
    tiny_config.num_train_steps = 3
    train.train_and_evaluate(tiny_config, source)
    before = sorted(os.listdir(os.path.join(source, "checkpoints")))
    other = tiny_config.copy_and_resolve_references()
    other.arch = "vgg13"
    _expect_user_error(other, source, r"holds a 'vgg11' arch but the config asks for 'vgg13'")
    assert sorted(os.listdir(os.path.join(source, "checkpoints"))) == before
    wide = tiny_config.copy_and_resolve_references()
    wide.width, wide.init_from = 1 / 8, source
    _expect_user_error(wide, str(tmp_path / "wide"),
                       r"conv1_1/bias has shape \(4,\), the model needs \(8,\)")
    b_net = tiny_config.copy_and_resolve_references()
    b_net.arch, b_net.num_train_steps = "vgg13", 1
    train.train_and_evaluate(b_net, str(tmp_path / "b"))
    deep = tiny_config.copy_and_resolve_references()
    deep.arch, deep.init_from = "vgg16", str(tmp_path / "b")
    _expect_user_error(deep, str(tmp_path / "deep"), "holds a vgg13 but the config trains a "
                       "vgg16: only a vgg11 \\(A\\) initialises another net")


@pytest.mark.slow
def test_init_from_net_a_copies_its_layers(tiny_config, tmp_path):
    import jax
    source = str(tmp_path / "a")
    tiny_config.num_train_steps = 3
    train.train_and_evaluate(tiny_config, source)
    deep = tiny_config.copy_and_resolve_references()
    deep.arch, deep.init_from = "vgg13", source
    record = ModelRecord.from_config(deep)
    variables = record.build().init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    load, _ = transfer.init_from_params(deep.init_from, record, variables["params"])
    params, _ = load(variables["params"])
    a = final_params(source)
    for name in ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"):
        assert_trees(params[name], a[name])
    assert_trees(params["conv1_2"], variables["params"]["conv1_2"])


def _cli(*args, devices=1):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, "-m", "vgg_jax.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_bad_input_one_line(tmp_path):
    res = _cli("--config=configs/quickstart.py", f"--workdir={tmp_path / 'w'}",
               "--config.batch_size=12", devices=8)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "error: batch_size 12 is not divisible by the 8 devices: use a multiple of 8.")
    assert not (tmp_path / "w").exists()
    res = _cli("--config=configs/quickstart.py", f"--workdir={tmp_path / 'w'}",
               "--config.no_such_field=1")
    assert res.returncode != 0 and "no_such_field" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_config_is_never_written(tiny_config, tmp_path):
    """Training, resuming and init_from leave the config as it was; the adopted
    preprocessing goes to the checkpoint's record."""
    tiny_config.num_train_steps = 3
    tiny_config.arch = "A"  # an alias stays an alias in the config
    before = tiny_config.to_dict()
    source = str(tmp_path / "source")
    train.train_and_evaluate(tiny_config, source)
    assert tiny_config.to_dict() == before
    assert json.load(open(os.path.join(source, "config.json")))["arch"] == "A"
    tuned = tiny_config.copy_and_resolve_references()
    tuned.init_from, tuned.std_rgb = source, (1.0, 1.0, 1.0)
    tuned_before = tuned.to_dict()
    train.train_and_evaluate(tuned, str(tmp_path / "tuned"))
    train.train_and_evaluate(tuned, str(tmp_path / "tuned"))  # resumes a finished run
    assert tuned.to_dict() == tuned_before
    record = checkpoints.open_read_only(str(tmp_path / "tuned")).record()
    assert record.std_rgb == tuple(tiny_config.std_rgb) and record.arch == "vgg11"


@pytest.mark.slow
def test_quiet_steps_copy_nothing_from_the_devices(tiny_config, tmp_path, monkeypatch):
    """Steps that neither log, evaluate nor save copy nothing to the host.

    The loop runs such steps under ``jax.transfer_guard_device_to_host(config.transfer_guard)``;
    JAX's CPU backend does not guard device-to-host copies, so the test counts them where
    every copy to NumPy (``device_get``, ``float()``) reads a device array's value.
    """
    import contextlib

    import jax
    import jax.numpy as jnp
    from jax._src.array import ArrayImpl
    from vgg_jax.parallel import preemption

    seen = {"quiet": False, "quiet_steps": 0, "copies": 0}
    real_guard, real_value = jax.transfer_guard_device_to_host, ArrayImpl._value

    @contextlib.contextmanager
    def guard(level):
        quiet = level != "allow"
        seen["quiet"], seen["quiet_steps"] = quiet, seen["quiet_steps"] + quiet
        with real_guard(level):
            yield
        seen["quiet"] = False

    def value(self):
        seen["copies"] += seen["quiet"]
        return real_value.fget(self)

    tiny_config.transfer_guard = "disallow"
    monkeypatch.setattr(jax, "transfer_guard_device_to_host", guard)
    monkeypatch.setattr(ArrayImpl, "_value", property(value))
    tiny_config.num_train_steps = 12
    tiny_config.log_every_steps = 6
    tiny_config.eval_every_steps = tiny_config.checkpoint_every_steps = 12
    metrics = train.train_and_evaluate(tiny_config, str(tmp_path / "quiet"))
    assert metrics["step"] == 12
    assert (seen["quiet_steps"], seen["copies"]) == (10, 0)  # steps 1-5 and 7-11
    original = preemption.Watcher.stop_requested

    def gathering(self, step):  # what the per-step collective of the old Watcher did
        jax.device_get(jnp.ones(()) * step)
        return original(self, step)

    monkeypatch.setattr(preemption.Watcher, "stop_requested", gathering)
    seen["quiet_steps"] = 0
    train.train_and_evaluate(tiny_config, str(tmp_path / "gathering"))
    assert (seen["quiet_steps"], seen["copies"]) == (10, 10)


@pytest.mark.slow
def test_run_returns_promptly_after_its_last_checkpoint(image_folder, tmp_path):
    """A hang test (not a speed test): no tf.data work is left to wait for at the end, even
    with an uncached data set and a shuffle buffer larger than it."""
    workdir = tmp_path / "prompt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vgg_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", f"--config.dataset=imagefolder:{image_folder}",
         f"--config.data_dir={tmp_path / 'tfds'}", "--config.eval_split=test",
         "--config.num_classes=3", "--config.width=0.0625", "--config.fc_width=16",
         "--config.batch_size=8", "--config.num_train_steps=20", "--config.cache=False",
         "--config.shuffle_buffer=16384", "--config.eval_every_steps=20"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last_eval = None
    for line in proc.stderr:
        if "eval_count=" in line:
            last_eval = time.time()
    proc.wait(timeout=600)
    ended = time.time()
    assert proc.returncode == 0 and last_eval is not None
    assert ended - last_eval < 10, f"{ended - last_eval:.1f} s from the last evaluation to exit"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg13_5x5", "vgg13_5x5_relu", "vgg16_7x7_bn"])
def test_large_kernel_twins_train(arch, tiny_config, tmp_path):
    tiny_config.arch = arch
    tiny_config.num_train_steps = tiny_config.eval_every_steps = 3
    metrics = train.train_and_evaluate(tiny_config, str(tmp_path / arch))
    assert metrics["step"] == 3 and np.isfinite(metrics["eval_loss"])
    loss = scalars(str(tmp_path / arch), "train_loss")
    assert sorted(loss) == [1, 2, 3] and all(np.isfinite(v) for v in loss.values())
    assert checkpoints.open_read_only(str(tmp_path / arch)).record().arch == arch

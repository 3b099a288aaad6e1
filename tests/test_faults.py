"""Surviving faults: SIGTERM and SIGKILL with exact resume, damaged checkpoints, failed saves,
non-finite losses."""

import glob
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vgg_jax.store import checkpoints
from vgg_jax.training import train
from vgg_jax.errors import PREEMPTED_EXIT_CODE, NonFiniteError

from conftest import ROOT
from test_train import assert_trees, final_params


def write_config(config, path) -> str:
    """A config file ``main`` can load, holding ``config``'s values."""
    with open(path, "w") as f:
        f.write("import json\nimport ml_collections\n\n\ndef get_config():\n"
                f"    return ml_collections.ConfigDict(json.loads({json.dumps(json.dumps(config.to_dict()))}))\n")
    return str(path)


def start(config_file: str, workdir: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-m", "vgg_jax.main", f"--config={config_file}",
                             f"--workdir={workdir}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for_checkpoint(workdir: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not glob.glob(os.path.join(workdir, "checkpoints", "[0-9]*")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.2)


@pytest.fixture
def long_config(tiny_config):
    tiny_config.num_train_steps = 150
    tiny_config.checkpoint_every_steps = 10
    tiny_config.eval_every_steps = 150
    tiny_config.log_every_steps = 10
    return tiny_config


@pytest.mark.slow
def test_sigterm_then_sigkill_then_finish_equals_an_uninterrupted_run(long_config, tmp_path):
    # With the recipes whose state or randomness a resume must restore: the EMA weights,
    # the step-keyed mixing draws and the per-example RandAugment draws.
    long_config.update(dict(ema_decay=0.9, mixup_alpha=0.2, cutmix_alpha=1.0,
                            label_smoothing=0.1, randaugment_ops=2, grad_accum_steps=2))
    config_file = write_config(long_config, tmp_path / "cfg.py")
    workdir = str(tmp_path / "preempted")
    ckpts = os.path.join(workdir, "checkpoints")
    proc = start(config_file, workdir)
    wait_for_checkpoint(workdir, proc)
    time.sleep(random.uniform(0.0, 1.0))
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)  # finish the step, checkpoint it, exit 75
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-2000:]
    # A hang test: the stream is abandoned, not torn down (which waited 30 s once).
    assert time.time() - signalled < 30, f"{time.time() - signalled:.0f} s to stop"
    stopped = checkpoints.Checkpoints(ckpts, read_only=True).latest_step()
    assert f"checkpoint of step {stopped} written" in err and 10 <= stopped < 150
    proc = start(config_file, workdir)  # resumes exactly there, then dies without warning
    time.sleep(2.0)
    while checkpoints.Checkpoints(ckpts, read_only=True).latest_step() == stopped:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(random.uniform(0.0, 1.0))
    proc.kill()
    proc.wait()
    proc = start(config_file, workdir)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert "Resumed from step" in err
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(long_config, straight)
    assert_trees(final_params(workdir), final_params(straight))  # bit for bit
    assert_trees(final_params(workdir, "ema"), final_params(straight, "ema"))


def _damage(kind: str, step_dir: str) -> None:
    if kind == "truncated file":
        files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
                 if os.path.isfile(f)]
        biggest = max(files, key=os.path.getsize)
        with open(biggest, "r+b") as f:
            f.truncate(os.path.getsize(biggest) // 2)
    elif kind == "missing metadata":
        os.remove(os.path.join(step_dir, "meta", "metadata"))
    else:  # a save that died half-way: only orbax's temporary directory exists
        os.rename(step_dir, step_dir + ".orbax-checkpoint-tmp-1234")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated file", "missing metadata", "half-written"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(kind, tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    tiny_config.num_train_steps = 6
    train.train_and_evaluate(tiny_config, workdir)  # checkpoints at steps 3 and 6
    ckpts = os.path.join(workdir, "checkpoints")
    step3 = checkpoints.Checkpoints(ckpts, read_only=True).restore_raw(3)["params"]
    _damage(kind, os.path.join(ckpts, "6"))
    tiny_config.num_train_steps = 9
    metrics, state = train.train_and_evaluate(tiny_config, workdir, return_state=True)
    assert metrics["step"] == 9
    # Resumed from step 3: steps 4-9 trained again, so step 9 equals a straight 9-step run.
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(tiny_config, straight)
    assert_trees(final_params(workdir), final_params(straight))
    assert os.path.isdir(os.path.join(ckpts, "3"))
    assert_trees(checkpoints.Checkpoints(ckpts, read_only=True).restore_raw(3)["params"], step3)
    if kind != "half-written":  # the damaged checkpoint is kept aside, not deleted
        assert glob.glob(os.path.join(ckpts, "6.unreadable*"))


@pytest.mark.slow
def test_failed_save_is_reported_and_the_previous_checkpoint_stays(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    tiny_config.num_train_steps = 3
    train.train_and_evaluate(tiny_config, workdir)
    ckpts = os.path.join(workdir, "checkpoints")
    before = checkpoints.Checkpoints(ckpts, read_only=True).restore_raw(3)["params"]
    tiny_config.num_train_steps = 6
    config_file = write_config(tiny_config, tmp_path / "cfg.py")
    # Files over 64 KiB cannot be written (as on a full disk); the event log stays smaller.
    limit = lambda: (signal.signal(signal.SIGXFSZ, signal.SIG_IGN),  # noqa: E731
                     resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16)))
    proc = start(config_file, workdir, preexec_fn=limit)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, err[-2000:]
    # orbax's threads log the failure too (tracebacks, from other threads: a line of theirs
    # may still be unfinished when the report comes); the report is the last error line.
    errors = re.findall(r"error: .*", err)
    assert errors, err[-3000:]
    line = errors[-1]
    assert "Saving the checkpoint of step 6" in line and "step 3 is intact" in line
    store = checkpoints.Checkpoints(ckpts, read_only=True)
    assert store.all_steps() == [3]
    assert_trees(store.restore_raw(3)["params"], before)


@pytest.mark.slow
def test_nonfinite_loss_stops_with_the_step_or_is_skipped(tiny_config, tmp_path):
    tiny_config.arch = "vgg11"  # no BatchNorm to tame a huge learning rate
    tiny_config.learning_rate = 1e12
    tiny_config.num_train_steps = 9
    tiny_config.checkpoint_every_steps = 1
    tiny_config.log_every_steps = 100
    workdir = str(tmp_path / "diverged")
    with pytest.raises(NonFiniteError, match=r"Non-finite loss or gradients at step (\d+)") as e:
        train.train_and_evaluate(tiny_config, workdir)
    bad = int(e.value.args[0].split("at step ")[1].split(";")[0])
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    kept = store.latest_step()
    assert kept is not None and kept < bad and f"step {kept}" in str(e.value)
    assert all(np.isfinite(x).all() for x in
               jax.tree_util.tree_leaves(store.restore_raw(kept)["params"]))
    tiny_config.skip_nonfinite = True
    metrics, state = train.train_and_evaluate(tiny_config, str(tmp_path / "skipped"),
                                              return_state=True)
    assert metrics["step"] == 9
    assert all(np.isfinite(np.asarray(x)).all()
               for x in jax.tree_util.tree_leaves(state.params))

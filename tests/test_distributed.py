"""Multi-process runs over jax.distributed on 127.0.0.1: 2 processes x 2 CPU devices against
1 process x 4 devices, for training and for the evaluation protocols."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import ml_collections
import numpy as np
import pytest

from vgg_jax.parallel import distributed
from vgg_jax.data import sources
from vgg_jax.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))


def start(mode: str, config, workdir: str, processes: int, devices: int, tmp):
    """Starts ``distributed_worker.py`` as ``processes`` processes; (processes, out files)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, outs = [], []
    for i in range(processes):
        cfg = config.to_dict()
        if processes > 1:
            cfg.update(coordinator_address=f"127.0.0.1:{port}", num_processes=processes,
                       process_id=i)
        path = tmp / f"{mode}_{processes}_{i}.json"
        path.write_text(json.dumps(cfg, default=list))
        outs.append(str(tmp / f"{mode}_{processes}_{i}.npz"))
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "distributed_worker.py"), mode, str(path),
             workdir, outs[-1]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True))
    return procs, outs


def launch(mode: str, config, workdir: str, processes: int, devices: int, tmp) -> list[dict]:
    """Runs ``distributed_worker.py`` as ``processes`` processes; returns what each wrote."""
    procs, outs = start(mode, config, workdir, processes, devices, tmp)
    errors = [p.communicate(timeout=400)[1] for p in procs]
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]
    return [dict(np.load(o)) for o in outs]


@pytest.fixture(scope="module")
def runs(image_folder, tmp_path_factory):
    """The same training as 2 processes x 2 devices and as 1 process x 4 devices."""
    from configs import default
    tmp = tmp_path_factory.mktemp("dist")
    c = default.get_config()
    c.update(dict(arch="vgg11_bn", width=1 / 16, fc_width=32, dropout_rate=0.5, num_classes=3,
                  dataset=f"imagefolder:{image_folder}", eval_split="test", image_size=32,
                  train_scale_min=32, train_scale_max=40, eval_scale=36,
                  std_rgb=(58.0, 57.0, 57.0), batch_size=8, eval_batch_size=8,
                  shuffle_buffer=0, cache=True, learning_rate=0.02, schedule="constant",
                  num_train_steps=6, log_every_steps=2, eval_every_steps=3,
                  checkpoint_every_steps=3, data_shards=2))
    c.data_dir = str(tmp / "tfds")
    sources.prepare(sources.get_builder(c.dataset, c.data_dir, None))  # build once, up front
    two = launch("train", c, str(tmp / "two"), 2, 2, tmp)
    one = launch("train", c, str(tmp / "one"), 1, 4, tmp)
    return c, tmp, two, one


def params(result: dict) -> dict:
    return {k: v for k, v in result.items() if k.startswith("param")}


@pytest.mark.slow
def test_two_processes_train_like_one_with_four_devices(runs):
    _, _, two, one = runs
    assert [(r["process_index"], r["process_count"], r["devices"]) for r in two] == \
        [(0, 2, 4), (1, 2, 4)]
    assert int(one[0]["process_count"]) == 1 and int(one[0]["devices"]) == 4
    first, second, single = params(two[0]), params(two[1]), params(one[0])
    assert len(first) == 38
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])  # identical on both hosts
        np.testing.assert_allclose(first[key], single[key], rtol=1e-5, atol=1e-6)
    for key in ("metric_eval_count", "metric_eval_top1", "metric_eval_top5"):
        assert two[0][key] == two[1][key] == pytest.approx(one[0][key])
    assert int(two[0]["metric_eval_count"]) == 30 and int(two[0]["metric_step"]) == 6
    np.testing.assert_allclose(two[0]["metric_eval_loss"], one[0]["metric_eval_loss"], rtol=1e-5)


@pytest.mark.slow
def test_evaluation_protocols_across_processes_count_every_image_once(runs):
    c, tmp, _, _ = runs
    checkpoint = str(tmp / "one")
    two = launch("evaluate", c, checkpoint, 2, 2, tmp)
    one = launch("evaluate", c, checkpoint, 1, 4, tmp)
    for r in two + one:
        assert int(r["single_images"]) == int(r["dense_images"]) == 30
    for key in ("single_top1_error", "single_top5_error", "dense_top1_error", "dense_top5_error"):
        assert two[0][key] == two[1][key] == pytest.approx(one[0][key])


def test_cluster_arguments_come_from_config_then_environment():
    config = ml_collections.ConfigDict({"coordinator_address": "", "num_processes": 0,
                                        "process_id": -1})
    assert distributed.cluster_args(config, {}) is None
    assert distributed.cluster_args(config, {"SLURM_NTASKS": "1"}) is None
    assert distributed.cluster_args(config, {"SLURM_NTASKS": "4"}) == {}  # JAX detects SLURM
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "3"}
    assert distributed.cluster_args(config, env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    config.update(coordinator_address="h:1", num_processes=2, process_id=0)
    assert distributed.cluster_args(config, env) == {
        "coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
    config.process_id = 2
    with pytest.raises(UserError, match="process_id"):
        distributed.cluster_args(config, {})


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_with_one_checkpoint(runs):
    """JAX's preemption sync: the signalled process and the other agree on the step."""
    c, tmp, _, _ = runs
    c = c.copy_and_resolve_references()
    c.update(num_train_steps=20_000, log_every_steps=20, eval_every_steps=20_000,
             checkpoint_every_steps=20_000, dropout_rate=0.0)
    workdir = tmp / "preempted"
    procs, outs = start("train", c, str(workdir), 2, 2, tmp)
    started = threading.Event()
    tails = [[], []]

    def read(i):  # the first training log line (step 20); keep the tail for failures
        for line in procs[i].stderr:
            tails[i] = (tails[i] + [line])[-40:]
            if "train_loss=" in line:
                started.set()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for r in readers:
        r.start()
    assert started.wait(300), "".join(tails[0] + tails[1])
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=300) for p in procs]
    for r in readers:
        r.join(timeout=10)
    assert codes == [75, 75], "".join(tails[0] + tails[1])
    stopped = [int(np.load(o)["preempted_step"]) for o in outs]
    assert stopped[0] == stopped[1] and 20 <= stopped[0] < 20_000
    assert sorted(os.listdir(workdir / "checkpoints")) == [str(stopped[0])]
    assert not glob.glob(str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*"))

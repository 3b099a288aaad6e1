"""Which checkpoints are kept, what can be read without restoring, and the model record."""

import dataclasses
import os
import shutil

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from vgg_jax.store import checkpoints
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

# The meta a training run of the code before ModelRecord wrote (train.model_meta).
OLD_META = {"arch": "vgg11_bn", "width": 0.25, "fc_width": 256, "num_classes": 3,
            "include_top": True, "image_size": 32, "mean_rgb": [123.68, 116.779, 103.939],
            "std_rgb": [58.393, 57.12, 57.375], "eval_scale": 36, "train_crop": "scale",
            "train_scale": [32, 40], "class_names": ["a", "b", "c"]}


def test_keeps_last_k_and_the_best(tmp_path):
    store = checkpoints.Checkpoints(str(tmp_path), keep=2)
    state = {"params": {"fc8": {"kernel": jnp.ones((2, 3))}}, "step": jnp.int32(0)}
    top1 = {2: 0.9, 4: 0.5, 6: 0.6}
    for step in range(1, 8):
        metrics = {checkpoints.BEST_METRIC: top1[step]} if step in top1 else None
        store.save(step, dict(state, step=jnp.int32(step)), ModelRecord("vgg11"),
                   metrics=metrics)
    store.wait()
    assert store.all_steps() == [2, 6, 7]
    assert store.param_shapes() == {"fc8": {"kernel": (2, 3)}}
    assert int(store.restore_raw(2)["step"]) == 2
    restored = store.restore(dict(state, step=jnp.int32(0)))
    assert int(restored["step"]) == 7
    np.testing.assert_array_equal(restored["params"]["fc8"]["kernel"], 1.0)
    store.close()


def test_a_reader_opens_while_the_run_deletes_an_old_checkpoint(tmp_path, monkeypatch):
    # The race CI once hit: orbax lists the steps, the running job removes step 1 (it keeps
    # the last k), then orbax stats step 1's directory.
    store = checkpoints.Checkpoints(str(tmp_path), keep=2)
    state = {"params": {"fc8": {"kernel": jnp.ones((2, 3))}}, "step": jnp.int32(0)}
    for step in (1, 2):
        store.save(step, dict(state, step=jnp.int32(step)), ModelRecord("vgg11"))
    store.wait()
    name_format = type(ocp.step.standard_name_format())
    real_find_all, deleted = name_format.find_all, []

    def find_all_then_the_writer_deletes_step_1(self, base_path):
        found = list(real_find_all(self, base_path))
        if not deleted:
            shutil.rmtree(os.path.join(str(base_path), "1"))
            deleted.append(1)
        return found

    monkeypatch.setattr(name_format, "find_all", find_all_then_the_writer_deletes_step_1)
    reader = checkpoints.Checkpoints(str(tmp_path), read_only=True)
    assert deleted and reader.all_steps() == [2] and reader.latest_step() == 2
    store.close()


def test_model_mismatch_is_a_user_error():
    record = ModelRecord(arch="vgg11", width=1.0, fc_width=0, num_classes=10)
    record.check_fits(dataclasses.replace(record, mean_rgb=(0, 0, 0)), "here")  # not architecture
    with pytest.raises(UserError, match="holds a 10 num_classes but the config asks for 5"):
        record.check_fits(dataclasses.replace(record, num_classes=5), "here")
    with pytest.raises(UserError, match="holds a 'vgg11' arch but the config asks for 'vgg13'"):
        record.check_fits(ModelRecord("B", num_classes=10), "here")


def test_record_round_trips_through_a_checkpoint_and_reads_old_ones(tmp_path):
    config = default.get_config()
    config.update(arch="A-LRN", width=0.5, fc_width=64, num_classes=3, image_size=64,
                  train_scale_min=64, train_scale_max=96, eval_scale=80)
    record = ModelRecord.from_config(config, ["cat", "dog", "emu"])
    assert record.arch == "vgg11_lrn" and config.arch == "A-LRN"  # alias resolved, config kept
    assert record.train_scale == (64, 96) and record.class_names == ("cat", "dog", "emu")
    assert ModelRecord.from_config(config, ["only", "two"]).class_names == ()
    store = checkpoints.Checkpoints(str(tmp_path / "new"), asynchronous=False)
    store.save(1, {"step": jnp.int32(1)}, record)
    assert store.record() == record
    assert store.newest_record() == (1, record)
    store.close()
    # A checkpoint written before the record existed reads into the same fields, and the
    # record writes the same JSON back.
    old = ocp.CheckpointManager(str(tmp_path / "old"), item_handlers={
        "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
    old.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": jnp.int32(5)}),
                                        meta=ocp.args.JsonSave(OLD_META)))
    old.wait_until_finished()
    old.close()
    read = checkpoints.open_read_only(str(tmp_path / "old")).record()
    assert read.to_meta() == OLD_META
    assert read.build().fc_width == 256 and read.build().arch == "vgg11_bn"
    with pytest.raises(UserError, match="No checkpoint in init_from"):
        checkpoints.open_read_only(str(tmp_path / "nothing"), "init_from")

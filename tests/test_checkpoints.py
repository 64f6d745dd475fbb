"""Checkpoints: a save or copy interrupted midway is refused on read, never resumed from as valid."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tf_keras as keras

from cluster.storage import RunStorage
from cluster.training import checkpoints
from cluster.training.checkpoints import CheckpointError


def tiny_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="logits")], name="tiny")


def saved(directory, seed: int, epoch: int):
    directory.mkdir()
    model = tiny_model(seed)
    checkpoints.save(directory, model, keras.optimizers.SGD(), {"epoch": epoch, "history": []})
    return model


def test_a_checkpoint_reads_back_its_weights_and_epoch(tmp_path):
    model = saved(tmp_path / "a", seed=1, epoch=3)
    other = tiny_model(seed=2)
    assert checkpoints.restore(tmp_path / "a", other)["epoch"] == 3
    for ours, theirs in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_a_save_interrupted_before_its_meta_is_not_a_checkpoint(tmp_path, monkeypatch):
    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        saved(tmp_path / "a", seed=1, epoch=1)
    monkeypatch.undo()
    assert not (tmp_path / "a" / "meta.json").exists()
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp-")] == []
    with pytest.raises(CheckpointError, match="not a readable sweetspot checkpoint"):
        checkpoints.restore(tmp_path / "a", tiny_model(seed=2))


def test_a_copy_interrupted_after_the_new_meta_is_refused(tmp_path, monkeypatch):
    """A run folder's checkpoint/ is uploaded file by file (meta.json sorts first) over the previous one."""
    storage = RunStorage(str(tmp_path / "run"))
    saved(tmp_path / "epoch1", seed=1, epoch=1)
    saved(tmp_path / "epoch2", seed=2, epoch=2)
    storage.upload(tmp_path / "epoch1", "checkpoint")
    real = storage.write_bytes

    def crash_on_state(relative, data):
        if "/state" in relative:
            raise OSError("connection lost")
        return real(relative, data)

    monkeypatch.setattr(storage, "write_bytes", crash_on_state)
    with pytest.raises(OSError):
        storage.upload(tmp_path / "epoch2", "checkpoint")
    assert json.loads(storage.read_text("checkpoint/meta.json"))["epoch"] == 2  # the new meta, the old state
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        checkpoints.restore(storage.path("checkpoint"), tiny_model(seed=3))


def test_a_truncated_state_file_is_refused(tmp_path):
    saved(tmp_path / "a", seed=1, epoch=1)
    state = next((tmp_path / "a").glob("state.data*"))
    state.write_bytes(state.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        checkpoints.restore(tmp_path / "a", tiny_model(seed=2))


def test_a_checkpoint_from_before_the_digests_still_reads(tmp_path):
    saved(tmp_path / "a", seed=1, epoch=4)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    del meta["state"]
    (tmp_path / "a" / "meta.json").write_text(json.dumps(meta))
    assert checkpoints.restore(tmp_path / "a", tiny_model(seed=2))["epoch"] == 4

"""Our checkpoint layout: model and optimizer state plus the epoch and the metrics so far.

    <dir>/state.*        tf.train.Checkpoint(model=..., optimizer=...)
    <dir>/meta.json      {"epoch": completed epochs, "history": [per-epoch metrics], "model": spec,
                          "state": {state file: sha256}}

meta.json is written last and whole, and names the digests of the state files
it belongs to: a write or copy interrupted midway (no meta, or a meta beside
another save's state files) is refused on read, never resumed from.

`init_from` accepts such a folder (a Ray Train checkpoint of ours) or a saved
Keras zip model file (.keras), loaded with safe mode (`cluster.models.load_keras_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from cluster.errors import CheckpointError, ModelFileError
from cluster.models import ModelShape, build_model, compile_classifier, load_keras_model

STATE_PREFIX = "state"
META_FILE = "meta.json"


def _state_digests(directory: str | os.PathLike) -> dict[str, str]:
    digests = {}
    for path in sorted(Path(directory).glob(f"{STATE_PREFIX}*")):
        with path.open("rb") as file:
            digests[path.name] = hashlib.file_digest(file, "sha256").hexdigest()
    return digests


def save(directory: str | os.PathLike, model: keras.Model, optimizer, meta: dict) -> None:
    tf.train.Checkpoint(model=model, optimizer=optimizer).write(os.path.join(directory, STATE_PREFIX))
    text = json.dumps({**meta, "state": _state_digests(directory)}, indent=1)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, Path(directory, META_FILE))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory, META_FILE)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable sweetspot checkpoint ({error})") from None
    # Checkpoints from before the digests were kept carry no "state"; they are read as before.
    if "state" in meta and meta["state"] != _state_digests(directory):
        raise CheckpointError(f"{directory}: incomplete checkpoint: its state files are not the ones meta.json "
                              "was written with (a save or copy interrupted midway)")
    return meta


def restore(directory: str | os.PathLike, model: keras.Model, optimizer=None) -> dict:
    """Load weights (and optimizer state when given) into built objects; returns the meta."""
    meta = read_meta(directory)
    load_state(directory, model, optimizer)
    return meta


def load_state(directory: str | os.PathLike, model: keras.Model, optimizer=None) -> None:
    """Load weights (and optimizer state when given) from a checkpoint whose meta was already read."""
    parts = {"model": model} if optimizer is None else {"model": model, "optimizer": optimizer}
    try:
        status = tf.train.Checkpoint(**parts).read(os.path.join(directory, STATE_PREFIX))
        status.expect_partial()
        if optimizer is None:
            status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise CheckpointError(f"{directory}: weights do not fit the model {model.name!r} ({error})") from None


def restored_model(model_spec, data, directory: str | os.PathLike) -> tuple[keras.Model, dict]:
    """A model of `model_spec` (family, width, depth, dropout) for `data` with the checkpoint's weights,
    compiled for evaluation; and the checkpoint's meta."""
    model = build_model(model_spec.family, ModelShape(tuple(data.image_shape), data.num_classes),
                        model_spec.width, model_spec.depth, model_spec.dropout, model_spec.head_units)
    meta = restore(directory, model)
    compile_classifier(model, "adam", data.num_classes)
    return model, meta


def load_initial_weights(source: str, model: keras.Model, trust_code: bool = False) -> None:
    """Fine-tuning start: weights from a checkpoint folder of ours or a saved Keras model file."""
    ours = os.path.exists(os.path.join(source, META_FILE))
    if os.path.isdir(source) and (ours or not trust_code):  # a trusted user's SavedModel folder loads below
        restore(source, model)
        return
    if not os.path.exists(source):
        raise CheckpointError(f"train.init_from: {source} does not exist")
    try:
        saved = load_keras_model(source, trust_code=trust_code)
    except ModelFileError as error:
        raise CheckpointError(f"train.init_from: {error}") from None
    ours = [tuple(w.shape) for w in model.weights]
    theirs = [tuple(w.shape) for w in saved.weights]
    if ours != theirs:
        raise CheckpointError(f"train.init_from: {source} has weight shapes {theirs}, "
                              f"the spec's model has {ours}")
    model.set_weights(saved.get_weights())

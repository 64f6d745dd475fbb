"""Model families, and the dscnn family through every compression step."""

import os
import re
import tempfile

import numpy as np
import pytest
import tf_keras as keras

from cluster import models
from cluster.compression import pipeline as compression
from cluster.compression.rescaling import fold_input_rescaling
from cluster.evaluation.tflite import TFLiteModel, write_bytes
from cluster.spec import ModelSpec, SearchSpace
from tests.conftest import ROOT

SHAPE = models.ModelShape((28, 28, 1), 10)


def separable_data(n=512, seed=0):
    """Noisy stripes: horizontal for classes 0-4, vertical for 5-9, the period (2-6 px) set by the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    coords = np.arange(28)
    images = rng.uniform(0, 40, (n, 28, 28, 1)).astype("float32")
    for i, label in enumerate(labels):
        period = 2 + label % 5
        stripes = ((coords + rng.integers(period)) % period < period / 2) * 200.0
        images[i, :, :, 0] += stripes[:, None] if label < 5 else stripes[None, :]
    return images, labels


def tiny_dscnn(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return models.build_model("dscnn", SHAPE, **{"width": 0.5, "depth": 2, **kwargs})


def fit(model, images, labels, callbacks=(), epochs=1, learning_rate=1e-2):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(images, labels, batch_size=32, epochs=epochs, callbacks=list(callbacks), verbose=0)


def tflite_predictions(tflite: bytes, images):
    with tempfile.TemporaryDirectory() as folder:
        path = write_bytes(tflite, os.path.join(folder, "model.tflite"))
        return TFLiteModel(path, num_threads=1).predict(images).argmax(axis=1)


def test_dscnn_is_a_family_the_specs_accept():
    assert "dscnn" in models.FAMILIES
    assert ModelSpec(family="dscnn").family == "dscnn"
    assert SearchSpace(family="dscnn").family == "dscnn"


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_dscnn_outputs_logits_for_raw_pixels(depth):
    model = tiny_dscnn(depth=depth)
    assert model.output_shape == (None, 10)
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    assert sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers) == depth
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    logits = model(np.full((2, 28, 28, 1), 255.0, np.float32), training=False)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_dscnn_parameters_grow_with_width_and_depth():
    params = {(w, d): tiny_dscnn(width=w, depth=d).count_params() for w in (0.5, 1.0, 2.0) for d in (2, 3)}
    assert params[0.5, 2] < params[1.0, 2] < params[2.0, 2]
    assert params[1.0, 2] < params[1.0, 3]


def test_dscnn_stays_small_at_width_one():
    # No dense head: at width 1, depth 3 the model is a few thousand weights.
    assert models.build_model("dscnn", SHAPE, width=1.0, depth=3).count_params() < 12_000


def test_dscnn_input_rescaling_folds_into_the_stem():
    model = tiny_dscnn()
    folded = fold_input_rescaling(model)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in folded.layers)
    images, _ = separable_data(8)
    np.testing.assert_allclose(folded(images, training=False), model(images, training=False), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [
    [{"prune": {"final_sparsity": 0.5, "end_step": 8, "frequency": 2, "exclude": ["stem", "logits"]}},
     {"quantize": {"mode": "int8"}}],
    [{"cluster": {"number_of_clusters": 8, "exclude": ["stem", "logits"]}}, {"quantize": {"mode": "int8"}}],
    [{"qat": {}}],
], ids=["prune-int8", "cluster-int8", "qat"])
def test_compressed_dscnn_tflite_agrees_with_keras(steps):
    images, labels = separable_data()
    model = tiny_dscnn()
    fit(model, images, labels, epochs=4)
    test_images, test_labels = separable_data(200, seed=1)
    assert np.mean(model.predict(test_images, verbose=0).argmax(axis=1) == test_labels) > 0.5, \
        "the tiny model did not learn the separable data"
    compressed, tflite = compression.run_pipeline(
        steps, model, lambda step, prepared: fit(prepared.model, images[:256], labels[:256], prepared.callbacks,
                                                 learning_rate=1e-3),
        representative_data=lambda: (images[i:i + 32] for i in range(0, 128, 32)))
    keras_predictions = compressed.predict(test_images, verbose=0).argmax(axis=1)
    tflite_predicted = tflite_predictions(tflite, test_images)
    # The int8 file computes what the Keras model does (the input Rescaling included).
    keras_accuracy = np.mean(keras_predictions == test_labels)
    assert abs(np.mean(tflite_predicted == test_labels) - keras_accuracy) <= 0.03
    assert np.mean(tflite_predicted == keras_predictions) >= 0.95


def test_models_save_as_zip_in_any_thread_and_only_zip_models_load(tmp_path):
    import threading
    import zipfile

    from cluster.models import ModelFileError, load_keras_model, save_keras_model

    model = models.build_model("cnn", models.ModelShape((28, 28, 1), 10), width=0.25)
    saved = []

    def in_a_thread():  # as Tune runs a trial: tf-keras's own flag writes HDF5 from the second save on
        for name in ("a.keras", "b.keras"):
            saved.append(save_keras_model(model, tmp_path / name))
            load_keras_model(saved[-1])
    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert len(saved) == 2 and all(zipfile.is_zipfile(path) for path in saved)
    model.save(tmp_path / "legacy.keras", save_format="h5")  # HDF5 under a .keras name
    with pytest.raises(ModelFileError, match="legacy.keras: not a Keras zip model"):
        load_keras_model(tmp_path / "legacy.keras")


def test_a_user_model_with_code_in_it_is_refused_naming_the_layer_before_anything_is_deserialized(tmp_path):
    """A Lambda layer or a custom class in a given model (baseline, init_from, artifact) is its author's code."""
    import tf_keras as keras

    from cluster.models import ModelFileError, load_keras_model, save_keras_model

    ran = []
    lambda_model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Lambda(lambda x: ran.append(1) or x,
                                                                                    name="payload")])
    save_keras_model(lambda_model, tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match=r"lambda.keras: layer 'payload' is a Lambda layer"):
        load_keras_model(tmp_path / "lambda.keras")

    @keras.saving.register_keras_serializable(package="someone")
    class Twice(keras.layers.Layer):
        def call(self, x):
            ran.append(1)
            return 2 * x

    save_keras_model(keras.Sequential([keras.layers.Input((4,)), Twice(name="twice")]), tmp_path / "custom.keras")
    ran.clear()  # building the model called its layers
    with pytest.raises(ModelFileError, match=r"custom.keras: layer 'twice' is someone>Twice .* custom object"):
        load_keras_model(tmp_path / "custom.keras")
    assert ran == []  # refused from config.json: nothing was built, nothing ran
    # A file the job wrote itself from the spec's own builder (which may be the user's) still loads.
    assert load_keras_model(tmp_path / "custom.keras", own_file=True).layers[-1].name == "twice"


def test_trust_model_code_loads_code_bearing_models_and_their_code_runs(tmp_path):
    """`trust_model_code: true`: Lambda layers, custom objects and HDF5 files load, with their code."""
    import numpy as np
    import tf_keras as keras

    from cluster.models import ModelFileError, load_keras_model, save_keras_model

    doubled = keras.Sequential([keras.layers.Input((4,)), keras.layers.Lambda(lambda x: 2 * x, name="payload")])
    save_keras_model(doubled, tmp_path / "lambda.keras")
    doubled.save(tmp_path / "lambda.h5", save_format="h5")
    for name in ("lambda.keras", "lambda.h5"):
        with pytest.raises(ModelFileError, match="set trust_model_code: true in the spec"):
            load_keras_model(tmp_path / name)
        loaded = load_keras_model(tmp_path / name, trust_code=True)
        assert loaded.get_layer("payload").__class__.__name__ == "Lambda"
        np.testing.assert_allclose(loaded.predict(np.ones((1, 4)), verbose=0), 2 * np.ones((1, 4)))
    with pytest.raises(ModelFileError, match="missing.h5: no such model file"):
        load_keras_model(tmp_path / "missing.h5", trust_code=True)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_classifier_trains_under_a_distribution_strategy(label_smoothing):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 255, (64, 12, 12, 1)).astype("float32"), rng.integers(0, 4, 64)
    with strategy.scope():
        model = models.build_model("bncnn", models.ModelShape((12, 12, 1), 4), width=0.25, depth=2)
        models.compile_classifier(model, "adam", 4, label_smoothing)
    history = model.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    if label_smoothing:
        # With targets smoothed by 0.1 over 4 classes, the loss of any prediction is at least their entropy.
        smoothed = np.array([0.925, 0.025, 0.025, 0.025])
        assert min(history.history["loss"]) >= -(smoothed * np.log(smoothed)).sum() - 1e-3


BUILDER = '''
import tf_keras as keras


def build(input_shape, num_classes, width, depth):
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for _ in range(depth):
        x = keras.layers.Conv2D(max(1, int(8 * width)), 3, activation="relu", name=f"conv{_}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))


def wrong_classes(input_shape, num_classes, width, depth):
    return build(input_shape, num_classes + 1, width, depth)


def not_a_model(input_shape, num_classes, width, depth):
    return "model"
'''


def test_a_users_own_builder_is_a_model_family(tmp_path, monkeypatch):
    from cluster.spec import load_spec
    from cluster.tuning.space import Scale

    (tmp_path / "my_models.py").write_text(BUILDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    shape = models.ModelShape((12, 12, 3), 5)
    model = models.build_model("my_models:build", shape, width=2.0, depth=2)
    assert model.input_shape[1:] == (12, 12, 3) and model.output_shape[-1] == 5
    assert model.get_layer("conv0").filters == 16
    spec = load_spec(ROOT / "configs" / "quickstart.yaml", ["search.family=my_models:build"])
    assert Scale(spec.search.family, 0.5, 2).name == "my_models-build-w0.5-d2"
    for family, expected in (("my_models:wrong_classes", "gives 6 outputs; the data has images of [12, 12, 3] "
                                                         "and 5 classes"),
                             ("my_models:not_a_model", "returned str, not a tf_keras model"),
                             ("my_models:absent", "cannot import it"),
                             ("no_such_module:build", "cannot import it")):
        with pytest.raises(models.ModelBuilderError, match=re.escape(expected)):
            models.build_model(family, shape)


def test_a_broken_builder_is_refused_before_the_job_starts(tmp_path):
    import subprocess
    import sys

    import yaml

    (tmp_path / "my_models.py").write_text(BUILDER)
    spec = tmp_path / "spec.yaml"
    document = yaml.safe_load((ROOT / "configs" / "train_sample.yaml").read_text())
    document["data"] = {**document["data"], "train": str(ROOT / "data/fashion_mnist_sample/train.parquet"),
                        "test": str(ROOT / "data/fashion_mnist_sample/test.parquet")}
    document["model"] = {"family": "my_models:wrong_classes"}
    spec.write_text(yaml.safe_dump(document))
    done = subprocess.run([sys.executable, "-m", "jobs", str(spec), "--output", str(tmp_path / "runs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model family 'my_models:wrong_classes' takes [28, 28, 1] and gives 11 outputs" in done.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a refused job"


def test_head_units_size_the_hidden_dense_layer_where_the_family_has_one():
    from pydantic import ValidationError

    shape = models.ModelShape((28, 28, 1), 10)
    assert models.build_model("bncnn", shape, 1.0, 2, head_units=128).get_layer("dense1").units == 128
    assert "dense1" not in [layer.name for layer in models.build_model("bncnn", shape, 1.0, 2).layers]
    assert models.build_model("cnn", shape, 0.5, 2).get_layer("dense1").units == 64
    assert models.build_model("cnn", shape, 0.5, 2, head_units=16).get_layer("dense1").units == 16
    assert ModelSpec(family="bncnn", head_units=128).head_units == 128
    with pytest.raises(ValidationError, match="head_units applies to the cnn and bncnn families, not 'mlp'"):
        ModelSpec(family="mlp", head_units=128)

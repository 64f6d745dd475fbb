"""TFLite export, the batch runner (float and int8), tensor inspection, errors."""

import numpy as np
import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from cluster.evaluation import export, tensors, tflite
from cluster.evaluation.errors import ArtifactError, InputShapeError
from cluster.models import ModelShape, build_model

SHAPE = ModelShape((12, 12, 1), 4)


def pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *SHAPE.image_shape)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return build_model("cnn", SHAPE, width=0.25, depth=2)


@pytest.fixture(scope="module")
def float_path(model, tmp_path_factory):
    return export.export_tflite(model, tmp_path_factory.mktemp("float") / "model.tflite")


@pytest.fixture(scope="module")
def int8_path(model, tmp_path_factory):
    def representative():
        for i in range(16):
            yield [pixels(1, seed=100 + i)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return tflite.write_bytes(converter.convert(), tmp_path_factory.mktemp("int8") / "model_int8.tflite")


@pytest.mark.timeout(60)
def test_float_export_predicts_like_keras(model, float_path):
    runner = tflite.TFLiteModel(float_path, num_threads=1)
    assert runner.sample_shape == SHAPE.image_shape
    assert runner.num_threads == 1 and not runner.is_quantized
    x = pixels(37)
    expected = model.predict_on_batch(x)
    # Batches of 16 make the runner resize: 16, 16, then 5.
    np.testing.assert_allclose(runner.predict(x, batch_size=16), expected, rtol=1e-4, atol=1e-4)
    labels = expected.argmax(axis=1)
    assert runner.accuracy(x, labels) == 1.0
    assert runner.accuracy(x, np.eye(SHAPE.num_classes)[labels]) == 1.0  # one-hot labels too
    assert set(tensors.weight_dtypes(float_path)) == {"float32"}
    assert tensors.weight_dtypes(float_path, roles=("kernel",)) == {"float32": 4}  # conv1, conv2, dense1, logits


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["float", "int8"])
def test_litert_and_tf_lite_give_the_same_outputs_on_the_same_file(which, float_path, int8_path):
    """LiteRT replaced tf.lite.Interpreter for measuring; while both exist, they must agree."""
    import warnings

    path = {"float": float_path, "int8": int8_path}[which]
    runner = tflite.TFLiteModel(path, num_threads=1)
    x = runner.quantize_input(pixels(16, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        reference = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    details = reference.get_input_details()[0]
    reference.resize_tensor_input(details["index"], list(x.shape))
    reference.allocate_tensors()
    reference.set_tensor(details["index"], x)
    reference.invoke()
    expected = reference.get_tensor(reference.get_output_details()[0]["index"])
    runner.run_batch(pixels(16, seed=3))
    actual = runner.interpreter.get_tensor(runner.output_index)
    assert actual.dtype == expected.dtype
    tolerance = 1 if which == "int8" else 1e-4  # int8: at most one quantization step apart
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), atol=tolerance, rtol=1e-4)


@pytest.mark.timeout(60)
def test_int8_model_runs_and_reports_int8_weights(model, int8_path):
    runner = tflite.TFLiteModel(int8_path)
    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8 and runner.is_quantized
    x = pixels(40, seed=1)
    logits = runner.predict(x, batch_size=32)
    assert logits.dtype == np.float32 and logits.shape == (40, SHAPE.num_classes)
    # Quantized inputs/outputs are converted: outputs land near the float model's.
    expected = model.predict_on_batch(x)
    assert np.abs(logits - expected).max() < 0.1 * max(1.0, np.abs(expected).max())

    dtypes = tensors.weight_dtypes(int8_path)
    kernels = [t for t in tensors.constant_tensors(int8_path) if t.role == "kernel"]
    assert len(kernels) == 4 and all(t.dtype == "int8" for t in kernels)
    assert dtypes["int8"] == 4
    assert "float32" not in dtypes


@pytest.mark.timeout(60)
def test_unique_value_counts_see_clustered_weights(model, tmp_path):
    clustered = tf.keras.models.clone_model(model)
    clustered.set_weights(model.get_weights())
    centroids = np.array([-0.2, -0.05, 0.05, 0.2], np.float32)
    for name in ("dense1", "logits"):
        layer = clustered.get_layer(name)
        kernel, bias = layer.get_weights()
        nearest = np.abs(kernel[..., None] - centroids).argmin(axis=-1)
        layer.set_weights([centroids[nearest], bias])
    path = export.export_tflite(clustered, tmp_path / "clustered.tflite")

    counts = tensors.unique_value_counts(path)
    by_layer = {name: n for name, n in counts.items() if "dense1" in name or "logits" in name}
    assert sorted(by_layer.values()) == [4, 4]
    assert all(n > 4 for name, n in counts.items() if "conv" in name)


@pytest.mark.timeout(60)
def test_missing_file_raises_named_error(tmp_path):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(ArtifactError, match="missing.tflite.*not found"):
        tflite.TFLiteModel(missing)
    with pytest.raises(ArtifactError, match="missing.tflite"):
        tensors.weight_dtypes(missing)


@pytest.mark.timeout(60)
def test_corrupt_file_raises_named_error(float_path, tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all" * 10)
    with pytest.raises(ArtifactError, match="garbage.tflite"):
        tflite.TFLiteModel(garbage)

    # Right identifier, body cut off: the flatbuffer verifier rejects it.
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(float_path.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="truncated.tflite"):
        tflite.TFLiteModel(truncated)
    with pytest.raises(ArtifactError, match="truncated.tflite"):
        tensors.constant_tensors(truncated)


@pytest.mark.timeout(60)
def test_input_shape_mismatch_raises_named_error(float_path):
    runner = tflite.TFLiteModel(float_path)
    with pytest.raises(InputShapeError, match="model.tflite.*\\(5, 12, 12\\)"):
        runner.predict(np.zeros((5, 12, 12), np.float32))  # channel axis missing
    with pytest.raises(InputShapeError, match="model.tflite"):
        runner.predict(np.zeros((5, 28, 28, 1), np.float32))
    assert issubclass(InputShapeError, ArtifactError)


@pytest.mark.timeout(120)
def test_a_tflite_file_is_measured_without_importing_tensorflow(int8_path, tmp_path):
    """An evaluate job's measuring task and the sweep's measuring need only LiteRT for a TFLite file:
    TensorFlow's import (about 3 CPU-seconds) is not paid there."""
    import json
    import subprocess
    import sys

    np.save(tmp_path / "images.npy", pixels(64))
    np.save(tmp_path / "labels.npy", np.arange(64) % 4)
    script = f"""
import json, sys
import numpy as np
import cluster
from cluster.evaluation.measure import measure
from cluster.spec import EvaluationSpec
images, labels = np.load({str(tmp_path / "images.npy")!r}), np.load({str(tmp_path / "labels.npy")!r})
row = measure("int8", {str(int8_path)!r}, None, images, labels,
              EvaluationSpec(repetitions=10, batch_sizes=[8], min_seconds=0.0, memory=True), {{}})
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "accuracy": row.accuracy,
                  "gzip": row.size_bytes_gzip, "dtypes": row.weight_dtypes, "rss": row.peak_rss_bytes}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["tensorflow"] is False
    assert 0.0 <= got["accuracy"] <= 1.0 and got["gzip"] > 0 and got["rss"] > 0
    assert got["dtypes"].get("int8", 0) > 0  # the flatbuffer was read (LiteRT's schema)

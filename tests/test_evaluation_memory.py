"""Peak RSS of inference in a fresh process; errors from the child come back named."""

import numpy as np
import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from cluster.evaluation import memory
from cluster.evaluation.errors import ArtifactError
from cluster.models import ModelShape, build_model


@pytest.mark.timeout(120)
def test_keras_model_peak_rss(tmp_path):
    path = tmp_path / "m.keras"
    build_model("mlp", ModelShape((12, 12, 1), 4), width=0.25).save(path)
    images = np.random.default_rng(0).uniform(0, 255, (50, 12, 12, 1))
    result = memory.measure_peak_rss(path, images=images, batch_size=16, num_threads=1)
    assert result.backend == "keras" and result.num_samples == 50 and result.num_threads == 1
    # TensorFlow alone needs far more than 50 MB; the model cannot shrink the peak.
    assert result.peak_rss_bytes >= result.baseline_rss_bytes > 50 * 2**20


# What a process holding LiteRT and a small model may take; TensorFlow alone is ~10x this.
LITERT_PEAK_LIMIT = 64 * 2**20


@pytest.mark.timeout(120)
def test_tflite_peak_rss_is_the_runtime_and_the_model_not_tensorflow(tmp_path):
    from cluster.evaluation.export import export_tflite

    model = build_model("cnn", ModelShape((28, 28, 1), 10), width=0.5)
    path = export_tflite(model, tmp_path / "cnn.tflite")
    tflite_peak = memory.measure_peak_rss(path, num_samples=256, batch_size=32, num_threads=1)
    keras_path = tmp_path / "cnn.keras"
    model.save(keras_path)
    keras_peak = memory.measure_peak_rss(keras_path, num_samples=256, batch_size=32, num_threads=1)
    assert tflite_peak.backend == "tflite" and keras_peak.backend == "keras"
    # Fails the day a TFLite measurement loads TensorFlow again.
    assert tflite_peak.peak_rss_bytes < LITERT_PEAK_LIMIT < keras_peak.baseline_rss_bytes
    # The model and its activations show: the peak is above the bare runtime's.
    assert tflite_peak.peak_rss_bytes > tflite_peak.baseline_rss_bytes


@pytest.mark.timeout(120)
def test_corrupt_artifact_error_crosses_the_process_boundary(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0\0\0\0TFL3" + b"\xff" * 100)
    with pytest.raises(ArtifactError, match="bad.tflite"):
        memory.measure_peak_rss(bad)


@pytest.mark.timeout(60)
def test_missing_artifact_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="gone.tflite"):
        memory.measure_peak_rss(tmp_path / "gone.tflite")

"""The full record of an artifact, its JSON round trip, and the Markdown table."""

import json

import numpy as np
import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from cluster.evaluation.report import measure_artifact
from cluster.results import EvaluationRecord
from cluster.evaluation.export import export_tflite
from cluster.models import ModelShape, build_model

SHAPE = ModelShape((12, 12, 1), 4)
REQUIRED = ("params", "params_nonzero", "flops", "flops_sparse", "size_bytes", "size_bytes_gzip",
            "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_sps", "num_threads",
            "peak_rss_bytes", "accuracy")


@pytest.mark.timeout(180)
def test_measure_artifact_fills_every_field(tmp_path):
    model = build_model("cnn", SHAPE, width=0.25)
    path = export_tflite(model, tmp_path / "cnn.tflite")
    images = np.random.default_rng(0).uniform(0, 255, (64, *SHAPE.image_shape)).astype(np.float32)
    labels = model.predict_on_batch(images).argmax(axis=1)

    record = measure_artifact(path, images, labels, keras_model=model, num_threads=1, batch_sizes=(8, 32),
                              repetitions=20, warmup=2, throughput_repetitions=2, min_seconds=0.0,
                              memory_samples=32,
                              extra={"width": 0.25})
    data = json.loads(record.model_dump_json())
    assert all(data[key] is not None for key in REQUIRED)
    assert data["name"] == "cnn" and data["extra"] == {"width": 0.25}
    assert data["accuracy"] == 1.0 and data["num_test_samples"] == 64
    assert data["params"] == model.count_params()
    # MACs by hand: conv 3x3 (1->8) on 12x12, pool, conv 3x3 (8->16) on 6x6, pool, dense 144->32, 32->4.
    assert data["flops"] == 12 * 12 * 8 * 9 + 6 * 6 * 16 * 9 * 8 + 144 * 32 + 32 * 4 == 56_576
    assert data["size_bytes"] == path.stat().st_size > data["size_bytes_gzip"]
    assert data["latency_ms_p50"] <= data["latency_ms_p95"] <= data["latency_ms_p99"]
    assert set(data["throughput_sps"]) == {"8", "32"} and data["batch_sizes"] == [8, 32]
    # Measured in LiteRT alone: the runtime and this model, never TensorFlow's ~600 MB.
    assert data["peak_rss_baseline_bytes"] < data["peak_rss_bytes"] < 64 * 2**20
    assert data["weight_dtypes"] == {"float32": data["weight_dtypes"]["float32"]}
    assert EvaluationRecord.model_validate(data) == record


@pytest.mark.timeout(60)
def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="latency_p50"):
        EvaluationRecord.model_validate({"name": "x", "latency_p50": 1.0})


@pytest.mark.timeout(120)
def test_the_specs_timing_floor_reaches_the_measurement(tmp_path):
    """`evaluation.min_seconds` decides how long each timing runs: with none, exactly `repetitions` calls."""
    from cluster.evaluation.measure import measure
    from cluster.spec import EvaluationSpec

    model = build_model("cnn", SHAPE, width=0.25)
    path = export_tflite(model, tmp_path / "cnn.tflite")
    images = np.zeros((8, *SHAPE.image_shape), np.float32)
    labels = np.zeros(8, np.int64)
    quick = EvaluationSpec(repetitions=10, batch_sizes=[8], memory=False, min_seconds=0.0)
    assert measure("m", path, None, images, labels, quick, {}).repetitions == 10
    # A 0.2 ms model timed for at least 0.3 s makes far more than 10 calls.
    steady = quick.model_copy(update={"min_seconds": 0.3})
    assert measure("m", path, None, images, labels, steady, {}).repetitions > 100

"""The full record of an artifact, its JSON round trip, and the Markdown table."""

import json

import numpy as np
import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from cluster.evaluation.report import EvaluationRecord, markdown_table, measure_artifact
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
    data = json.loads(record.to_json())
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
    assert EvaluationRecord.from_dict(data) == record


@pytest.mark.timeout(60)
def test_markdown_table_has_a_row_per_record():
    full = EvaluationRecord(name="cnn-int8", accuracy=0.9123, params=26698, params_nonzero=13000, flops=307648,
                            flops_sparse=150000, size_bytes=30 * 1024, size_bytes_gzip=20 * 1024,
                            latency_ms_p50=0.04, latency_ms_p95=0.05, latency_ms_p99=0.1,
                            throughput_sps={"32": 24000.0, "256": 22879.5}, num_threads=1,
                            peak_rss_bytes=800 * 2**20)
    partial = {"name": "mlp|float"}  # dicts work too; missing values render as '-'
    table = markdown_table([full, partial])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| name | accuracy | params |")
    assert all(line.count("|") == lines[0].count("|") for line in lines[:3])
    assert "| cnn-int8 | 0.9123 | 26,698 | 13,000 | 307,648 | 150,000 | 30.0 | 20.0 |" in lines[2]
    assert "22,880 @256" in lines[2] and "800.0" in lines[2]
    assert lines[3].startswith("| mlp\\|float | - | - |")


@pytest.mark.timeout(60)
def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="latency_p50"):
        EvaluationRecord.from_dict({"name": "x", "latency_p50": 1.0})

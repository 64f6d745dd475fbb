"""The evaluate job: given artifacts measured side by side in one Ray task; bad artifacts named up front."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, SAMPLE, start_job, wait_for


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    import tf_keras as keras

    from cluster.evaluation.export import export_tflite
    from cluster.models import ModelShape, build_model

    folder = tmp_path_factory.mktemp("artifacts")
    keras.utils.set_random_seed(0)
    model = build_model("mlp", ModelShape((28, 28, 1), 10), width=0.25, depth=1)
    model.save(folder / "mlp.keras")
    export_tflite(model, folder / "mlp.tflite")
    wrong = build_model("mlp", ModelShape((32, 32, 1), 10), width=0.25, depth=1)
    export_tflite(wrong, folder / "wrong.tflite")
    # A model with code in it (a Lambda layer), in the HDF5 format safe mode does not cover.
    coded = keras.Sequential([keras.layers.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x / 255.0, name="scale"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    coded.save(folder / "coded.h5", save_format="h5")
    return folder


def document(artifacts: list[dict]) -> dict:
    return {"version": 1, "kind": "evaluate", "name": "test-evaluate",
            "data": {"test": str(SAMPLE / "test.parquet"), "num_classes": 10},
            "artifacts": artifacts, "evaluation": {"repetitions": 30, "batch_sizes": [32], "memory": False, "min_seconds": 0.1}}


def run(tmp_path, spec_document):
    spec = tmp_path / "evaluate.yaml"
    spec.write_text(yaml.safe_dump(spec_document))
    return subprocess.run([sys.executable, "-m", "jobs", str(spec), "--output", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(600)
def test_tflite_and_keras_measured_in_one_task(ray_cluster, artifacts, tmp_path):
    from cluster.data.pipeline import load_arrays
    from cluster.data.sources import resolve
    from cluster.evaluation.tflite import TFLiteModel
    from cluster.spec import TestDataSpec

    done = run(tmp_path, document([{"name": "tflite", "path": str(artifacts / "mlp.tflite")},
                                   {"name": "keras", "path": str(artifacts / "mlp.keras")}]))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "test-evaluate" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["variants"]}
    assert rows["tflite"]["node"] == rows["keras"]["node"]
    data = TestDataSpec(test=str(SAMPLE / "test.parquet"), num_classes=10)
    images, labels = load_arrays(resolve(data.test, "data.test"), data)
    assert rows["tflite"]["accuracy"] == pytest.approx(TFLiteModel(artifacts / "mlp.tflite").accuracy(images, labels))
    # The same untrained weights: float TFLite and Keras agree on accuracy and on the parameter count.
    assert rows["keras"]["accuracy"] == pytest.approx(rows["tflite"]["accuracy"], abs=0.002)
    assert rows["keras"]["params"] == 784 * 64 + 64 + 64 * 10 + 10
    for row in rows.values():
        assert row["latency_ms_p50"] <= row["latency_ms_p95"] <= row["latency_ms_p99"]
        assert row["num_threads"] == 1
    assert "| tflite" in (tmp_path / "test-evaluate" / "report.md").read_text()


@pytest.mark.timeout(600)
def test_a_model_with_code_is_measured_only_when_the_spec_trusts_it(ray_cluster, artifacts, tmp_path):
    spec = document([{"name": "coded", "path": str(artifacts / "coded.h5")}])
    refused = run(tmp_path, spec)
    assert refused.returncode == 2 and "coded.h5: not a Keras zip model" in refused.stderr
    assert "trust_model_code: true" in refused.stderr and not (tmp_path / "test-evaluate").exists()
    done = run(tmp_path, {**spec, "trust_model_code": True})
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "test-evaluate" / "summary.json").read_text())["variants"]
    assert row["params"] == 784 * 10 + 10 and 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms_p50"] > 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("artifact, message", [
    ("missing.tflite", "missing.tflite: artifact not found"),
    ("wrong.tflite", "takes inputs of shape [32, 32, 1], the test data has [28, 28, 1]"),
])
def test_bad_artifacts_are_named_before_any_cluster_time(artifacts, tmp_path, artifact, message):
    done = run(tmp_path, document([{"name": "bad", "path": str(artifacts / artifact)}]))
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "test-evaluate").exists()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("artifact, exit_code", [("mlp.tflite", 0), ("wrong.tflite", 2)])
def test_a_tflite_only_job_never_loads_tensorflow_in_its_driver(ray_cluster, artifacts, tmp_path, artifact,
                                                                 exit_code):
    """The driver of an evaluate job of TFLite files, refused or run to the end, never imports TensorFlow
    (about 4 CPU-seconds of each such job's 5.8 before)."""
    spec = tmp_path / "evaluate.yaml"
    spec.write_text(yaml.safe_dump(document([{"name": "tiny", "path": str(artifacts / artifact)}])))
    script = ("import sys\nfrom jobs.__main__ import main\n"
              f"code = main([{str(spec)!r}, '--output', {str(tmp_path)!r}])\n"
              "print('RESULT', code, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert f"RESULT {exit_code} False" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "test-evaluate" / "summary.json").exists() == (exit_code == 0)


@pytest.mark.timeout(300)
def test_a_driver_run_without_a_reserved_share_waits_for_its_own_and_runs_when_it_is_free(ray_client, artifacts,
                                                                                          tmp_path):
    """A job sent with plain `ray job submit`, or its driver run directly, reserved no `sweetspot_cpu` at
    submission: it holds its own share (cluster/admission.py), so while other jobs hold the whole pool it
    waits, writing nothing, and it runs once they free it."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from cluster.training.resources import ADMISSION_RESOURCE, Capacity

    pool = Capacity.of_cluster().pool
    if pool is None:
        pytest.skip("the local cluster was started without the sweetspot_cpu admission resource")
    others = placement_group([{ADMISSION_RESOURCE: pool}])  # what running jobs would hold: all of it
    assert others.wait(timeout_seconds=60)
    spec = tmp_path / "evaluate.yaml"
    spec.write_text(yaml.safe_dump(document([{"name": "tiny", "path": str(artifacts / "mlp.tflite")}])))
    log = spec.with_suffix(".log")
    job = start_job(spec, tmp_path)
    try:
        wait_for(lambda: f"waiting for 1 of the cluster's {pool:g} {ADMISSION_RESOURCE}" in log.read_text(),
                 "the driver to wait for its share", timeout=120, process=job)
        assert job.poll() is None and not (tmp_path / "test-evaluate").exists()
    finally:
        remove_placement_group(others)
        try:
            assert job.wait(timeout=240) == 0, log.read_text()[-3000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
    assert "admitted" in log.read_text()
    assert (tmp_path / "test-evaluate" / "summary.json").is_file()

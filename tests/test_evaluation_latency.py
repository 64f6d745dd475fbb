"""Latency percentiles and throughput, in process (TFLite) and in a fresh process (Keras)."""

import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from cluster.evaluation import latency
from cluster.evaluation.errors import ArtifactError
from cluster.evaluation.export import export_tflite
from cluster.models import ModelShape, build_model

SHAPE = ModelShape((12, 12, 1), 4)
QUICK = dict(batch_sizes=(4, 16), repetitions=30, warmup=3, throughput_repetitions=3, min_seconds=0.0)


def check_result(result, backend, num_threads):
    assert result.backend == backend
    assert 0 < result.latency_ms_p50 <= result.latency_ms_p95 <= result.latency_ms_p99
    assert result.num_threads == num_threads
    assert result.batch_sizes == (4, 16) and result.repetitions == 30
    assert set(result.throughput_sps) == {4, 16} and all(v > 0 for v in result.throughput_sps.values())
    assert result.throughput_calls == {4: 3, 16: 3}
    assert latency.LatencyResult.from_dict(result.to_dict()) == result


@pytest.fixture(scope="module")
def model():
    return build_model("mlp", SHAPE, width=0.25)


@pytest.mark.timeout(60)
def test_tflite_latency_is_ordered_and_records_threads(model, tmp_path):
    path = export_tflite(model, tmp_path / "m.tflite")
    check_result(latency.measure_tflite_latency(path, num_threads=2, **QUICK), "tflite", 2)


@pytest.mark.timeout(120)
def test_keras_latency_in_fresh_process(model, tmp_path):
    path = tmp_path / "m.keras"
    model.save(path)
    check_result(latency.measure_latency_in_subprocess(path, num_threads=1, **QUICK), "keras", 1)


@pytest.mark.timeout(60)
def test_min_seconds_extends_the_timing():
    calls = latency.time_calls(lambda: None, repetitions=5, warmup=0, min_seconds=0.05)
    assert len(calls) > 5 and sum(calls) <= 0.05 + 0.01


@pytest.mark.timeout(60)
def test_percentiles_of_known_timings():
    p50, p95, p99, mean = latency.percentiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (p50, mean) == pytest.approx((50.5, 50.5))
    assert p95 == pytest.approx(95.05) and p99 == pytest.approx(99.01)


@pytest.mark.timeout(60)
def test_missing_artifact_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="absent.tflite"):
        latency.measure_tflite_latency(tmp_path / "absent.tflite", **QUICK)
    with pytest.raises(ArtifactError, match="absent.keras"):
        latency.measure_latency_in_subprocess(tmp_path / "absent.keras", **QUICK)


@pytest.mark.timeout(60)
def test_thread_pools_cannot_change_once_tensorflow_runs():
    import tensorflow as tf

    from cluster.evaluation.errors import MeasurementError
    from cluster.evaluation.keras_latency import configure_tf_threads

    tf.constant(1.0) + 1.0  # TensorFlow has now fixed its pools in this process
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(MeasurementError, match="fresh process"):
        configure_tf_threads(current + 3)


@pytest.mark.timeout(60)
def test_timing_a_tflite_file_never_imports_tensorflow(tmp_path):
    """LiteRT alone: a process that measures a .tflite file stays free of TensorFlow."""
    import subprocess
    import sys

    from cluster.evaluation.export import export_tflite

    path = export_tflite(build_model("mlp", ModelShape((8, 8, 1), 3), width=0.25), tmp_path / "m.tflite")
    code = ("import sys; from cluster.evaluation import latency, memory, tflite; "
            f"latency.measure_tflite_latency({str(path)!r}, repetitions=5, warmup=1, throughput_repetitions=1, "
            "min_seconds=0.0); print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


KERAS_TIMING = """
import json, sys
import cluster
from cluster.evaluation import keras_latency
from cluster.models import load_keras_model

def no_subprocess(*args, **kwargs):
    print(json.dumps({"fresh_process": True}))
    sys.exit(0)

keras_latency.measure_latency_in_subprocess = no_subprocess
if sys.argv[2] == "op first":
    import tensorflow as tf
    tf.constant(1.0) + 1.0  # the pools are now fixed at TensorFlow's defaults
threads_set = keras_latency.runs_on_threads(1)
model = load_keras_model(sys.argv[1])
result = keras_latency.measure_keras_model(model, sys.argv[1], num_threads=1, batch_sizes=(4,), repetitions=10,
                                           min_seconds=0.0)
import tensorflow as tf
print(json.dumps({"fresh_process": False, "threads_set": threads_set, "num_threads": result.num_threads,
                  "pools": [tf.config.threading.get_intra_op_parallelism_threads(),
                            tf.config.threading.get_inter_op_parallelism_threads()]}))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("order", ["threads first", "op first"])
def test_a_keras_model_is_timed_in_process_when_its_pools_were_set_first(model, tmp_path, order):
    """A process that set TensorFlow's pools to the measured count before its first op (a train job's driver)
    times the model itself; one whose pools are already fixed otherwise hands it to a fresh process."""
    import json
    import subprocess
    import sys

    path = tmp_path / "m.keras"
    model.save(path)
    done = subprocess.run([sys.executable, "-c", KERAS_TIMING, str(path), order], capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if order == "threads first":
        assert outcome == {"fresh_process": False, "threads_set": True, "num_threads": 1, "pools": [1, 1]}
    else:
        assert outcome == {"fresh_process": True}

"""End to end on the real local cluster: a 2-worker train job, every output checked.

The end-to-end job goes through `sweetspot submit --wait` (tests/conftest.py);
the jobs sent here go through `ray job submit` itself, as the README sends one.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ray_job_submit, train_document

# Chance is 0.10. Three epochs of the half-width CNN on the 5,400-row sample
# reach about 0.80 here; a broken pipeline (labels detached from images, a
# wrong split, no learning) stays near chance, so 0.70 separates the two.
ACCURACY_FLOOR = 0.70


@pytest.mark.timeout(900)
def test_job_writes_every_output(e2e_train_run):
    run, _ = e2e_train_run
    for name in ("spec.yaml", "model.keras", "model.tflite", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "checkpoint" / "meta.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    from cluster.results import TrainSummary, read_summary

    typed = read_summary(summary)  # every key known, every type right
    assert isinstance(typed, TrainSummary) and typed.models.tflite.accuracy == typed.tflite_test_accuracy
    assert summary["kind"] == "train" and summary["epochs_completed"] == 3 and summary["workers"] == 2
    assert summary["train_seconds"] > 0 and summary["samples_per_second"] > 0
    for path in summary["artifacts"].values():
        assert Path(path).exists(), path
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    assert all(m["workers"] == 2 and m["replicas"] == 2 for m in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]


@pytest.mark.timeout(900)
def test_the_same_job_sent_while_it_runs_is_refused_with_the_running_jobs_id(e2e_train_run):
    """Two jobs of one name used to both write the run folder (the last writer won)."""
    run, first = e2e_train_run
    second = json.loads((run.parent / "second-submit.json").read_text())  # written by the fixture
    output = second["output"]
    first_id = json.loads((run / "claim.json").read_text())["holder"]["submission_id"]
    assert second["returncode"] != 0 and first_id and first_id in first.stdout + first.stderr
    assert f"is in use by job {first_id}" in output and f"sweetspot stop {first_id}" in output, output[-2000:]
    assert "Traceback" not in output


def actor_classes(run: Path) -> Counter:
    """How many actors of each class the job that wrote `run` started."""
    from ray.util.state import list_actors, list_jobs

    submission_id = json.loads((run / "claim.json").read_text())["holder"]["submission_id"]
    (job,) = list_jobs(filters=[("submission_id", "=", submission_id)])
    return Counter(actor.class_name for actor in list_actors(filters=[("job_id", "=", job.job_id)], limit=10_000))


@pytest.mark.timeout(900)
def test_each_run_starts_one_bookkeeping_actor_and_no_split_coordinator_nor_preemption_watcher(e2e_train_run,
                                                                                               ray_client):
    """Each actor is a process started on the run's clock (about 2 CPU-s each on 2 cores). Per Ray Train
    run: one `RunLog`; no dataset manager nor split coordinator, as each worker streams its own share of
    the held train rows and reads its validation rows from the object store; no preemption watcher on the
    one-machine cluster, and no placement-group cleaner in a run the job's driver starts
    (training/trainer.py)."""
    run, _ = e2e_train_run
    classes = actor_classes(run)
    runs = classes["TrainController"]  # the job's run and its learning-curve point's
    assert runs == 2 and classes["RayTrainWorker"] == 2 * runs, classes
    assert classes["RunLog"] == runs, classes
    assert classes["SplitCoordinator"] == 0 and classes["DatasetManager"] == 0, classes
    assert classes["PreemptionWatcher"] == 0 and classes["PlacementGroupCleaner"] == 0, classes


@pytest.mark.timeout(300)
def test_a_run_started_in_a_ray_worker_keeps_the_placement_group_cleaner(ray_client):
    """A Tune trial (an actor) or a task lives on after a failed run: its runs keep Ray Train's cleaner,
    which removes a dead controller's placement group. A job's driver (this process, here) leaves it out."""
    from cluster.training.trainer import started_by_job_driver

    @ray_client.remote(num_cpus=0)
    def in_a_task() -> bool:
        from cluster.training.trainer import started_by_job_driver
        return started_by_job_driver()

    @ray_client.remote(num_cpus=0)
    class Trial:
        def started_by_job_driver(self) -> bool:
            from cluster.training.trainer import started_by_job_driver
            return started_by_job_driver()

    trial = Trial.remote()
    assert ray_client.get([in_a_task.remote(), trial.started_by_job_driver.remote()]) == [False, False]
    ray_client.kill(trial)
    assert started_by_job_driver()


@pytest.mark.timeout(900)
def test_accuracy_is_measured_on_the_test_split_and_clears_the_floor(e2e_train_run):
    from cluster.data.pipeline import load_arrays
    from cluster.data.sources import resolve
    from cluster.evaluation.tflite import TFLiteModel
    from cluster.spec import DataSpec
    from tests.conftest import SAMPLE

    run, _ = e2e_train_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] >= ACCURACY_FLOOR
    assert summary["test_rows"] == 1000
    data = DataSpec(train=str(SAMPLE / "train.parquet"), test=str(SAMPLE / "test.parquet"), num_classes=10)
    images, labels = load_arrays(resolve(data.test, "data.test"), data)
    # The TFLite export takes raw pixels: its accuracy, re-run here, is the one reported.
    assert TFLiteModel(run / "model.tflite").accuracy(images, labels) == pytest.approx(
        summary["tflite_test_accuracy"], abs=1e-9)
    assert abs(summary["tflite_test_accuracy"] - summary["test_accuracy"]) < 0.01


@pytest.mark.timeout(900)
def test_summary_has_the_four_sides_of_efficiency(e2e_train_run):
    run, _ = e2e_train_run
    summary = json.loads((run / "summary.json").read_text())
    for field in ("latency_ms_p50", "latency_ms_p95", "throughput_sps", "flops", "params", "params_nonzero",
                  "size_bytes_gzip", "peak_rss_bytes"):
        assert summary[field], field
    assert summary["latency_ms_p50"] <= summary["latency_ms_p95"]
    assert set(summary["throughput_sps"]) == {"32", "256"}
    assert summary["models"]["keras"]["latency_ms_p50"] > 0 and summary["models"]["tflite"]["num_threads"] == 1
    curve = summary["data_efficiency"]["learning_curve"]
    assert [p["fraction"] for p in curve] == [0.25, 1.0]
    assert curve[0]["train_rows"] == 1350 and curve[1]["train_rows"] == 5400
    assert len(summary["data_efficiency"]["accuracy_vs_samples_seen"]) == 3
    resources = summary["resources"]
    assert set(resources["peak_rss_bytes_per_worker"]) == {"0", "1"}
    assert 0 < resources["worker_cpu_seconds"] and resources["gpu_seconds"] == 0.0
    assert resources["cost"] == pytest.approx(resources["reserved_cpu_seconds"] / 3600 * 0.05)


@pytest.mark.timeout(900)
def test_init_from_continues_from_the_checkpoint(e2e_train_run, ray_client, tmp_path):
    run, _ = e2e_train_run
    before = json.loads((run / "summary.json").read_text())
    spec = tmp_path / "finetune.yaml"
    document = train_document(
        name="e2e-finetune",
        train={"epochs": 1, "global_batch_size": 128, "seed": 0, "init_from": str(run / "checkpoint"),
               "optimizer": {"name": "adam", "learning_rate": 1e-4}})
    # Rows streamed from the files, as data too large to hold is: Ray Train splits both streams between
    # the two workers (a dataset manager, a split coordinator per dataset).
    document["data"]["cache"] = False
    spec.write_text(yaml.safe_dump(document))
    done = ray_job_submit(spec, "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    classes = actor_classes(tmp_path / "e2e-finetune")
    assert classes["DatasetManager"] == 1 and classes["SplitCoordinator"] == 2, classes
    # Sent without the job environment `sweetspot submit` adds, still no Ray Data progress bar.
    assert "Running Dataset" not in done.stdout + done.stderr, done.stdout[-3000:]
    after = json.loads((tmp_path / "e2e-finetune" / "summary.json").read_text())
    first_epoch = json.loads((tmp_path / "e2e-finetune" / "metrics.jsonl").read_text().splitlines()[0])
    # One epoch from scratch reaches well under the 3-epoch model; from the checkpoint it starts there.
    assert first_epoch["val_accuracy"] >= before["validation_accuracy"] - 0.03
    assert after["test_accuracy"] >= before["test_accuracy"] - 0.03


@pytest.mark.timeout(300)
def test_bad_data_fails_before_training_with_the_row(ray_cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tests.conftest import SAMPLE

    table = pq.read_table(SAMPLE / "test.parquet")
    labels = table.column("label").to_numpy().copy()
    labels[42] = 99
    bad = tmp_path / "test-bad.parquet"
    pq.write_table(table.set_column(1, "label", pa.array(labels)), bad)
    document = train_document(name="bad-data")
    document["data"]["test"] = str(bad)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(document))
    done = ray_job_submit(spec, "--output", str(tmp_path / "out"), timeout=300)
    assert done.returncode != 0
    assert "data.test" in done.stdout and "row 42: label 99 is outside [0, 10)" in done.stdout
    assert not (tmp_path / "out" / "bad-data" / "train").exists(), "no training may start"
    assert np.all(pq.read_table(bad).column("label").to_numpy() == labels), "input left as it was"

"""A small sweep on the real local cluster: Tune runs Train trials; summary, report and best.tflite agree."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys

import pytest
import yaml

from cluster.tuning.pareto import dominates, violations
from tests.conftest import ROOT, start_job, train_document, wait_for

MAX_SIZE_KB = 60.0


def sweep_document(**changes) -> dict:
    base = train_document()
    document = {
        "version": 1, "kind": "sweep", "name": "test-sweep", "data": base["data"],
        "augment": [{"flip_left_right": {"p": 0.5}}],
        "search": {"family": "cnn", "widths": [0.25], "depths": [2], "pipelines": [
            {"name": "float", "pipeline": []},
            {"name": "int8", "pipeline": [{"quantize": {"mode": "int8"}}]},
            {"name": "p75-int8", "pipeline": [{"prune": {"final_sparsity": 0.75, "exclude": ["logits"]}},
                                              {"quantize": {"mode": "int8"}}]},
            {"name": "broken", "pipeline": [{"distill": {"student": {"family": "cnn", "width": 0.125}}}]},
        ]},
        "train": {"epochs": 2, "global_batch_size": 128, "optimizer": {"name": "adam", "learning_rate": 0.003}},
        "fine_tune": {"epochs": 1, "global_batch_size": 128},
        "constraints": {"max_size_kb": MAX_SIZE_KB},
        "tune": {"scheduler": "asha", "grace_epochs": 1, "reduction_factor": 2},
        # One worker with both cores: one TensorFlow start per fine-tuning run, not two (the suite's time);
        # training across workers is test_train_job's and test_faults'.
        "scaling": {"num_workers": 1, "cpus_per_worker": 2},
        "evaluation": {"repetitions": 30, "batch_sizes": [32], "memory": False, "min_seconds": 0.1},
        "output": {"storage": "/tmp/sweetspot-tests"},
    }
    document.update(changes)
    return document


class Planted:
    """A pickle that touches a file when loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def run(spec_path, storage, env=None):
    return subprocess.run([sys.executable, "-m", "jobs", str(spec_path), "--output", str(storage)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500, env=env)


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory):
    """The sweep, with its driver killed once mid-sweep and the same spec submitted again to finish it."""
    storage = tmp_path_factory.mktemp("sweep")
    spec = storage / "sweep.yaml"
    spec.write_text(yaml.safe_dump(sweep_document()))
    # One trial fails on purpose (injected through the environment its trial inherits).
    env = {**os.environ, "SWEETSPOT_FAIL_TRIAL": "cnn-w0.25-d2-broken"}
    run_dir = storage / "test-sweep"
    # A variant's history is written last: once it exists, it is built (int8, in the driver: no fine-tuning).
    finished = [run_dir / "scales" / "cnn-w0.25-d2" / "model.keras",
                run_dir / "variants" / "cnn-w0.25-d2-int8" / "model.tflite",
                run_dir / "variants" / "cnn-w0.25-d2-int8" / "history.json"]
    driver = start_job(spec, storage, env=env)
    try:
        wait_for(finished[-1].exists, "the int8 variant to be built", timeout=1200, process=driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert not (run_dir / "summary.json").exists()
    before_kill = {path: path.stat().st_mtime_ns for path in finished}
    done = run(spec, storage, env)
    assert done.returncode == 0, done.stderr[-5000:]
    return storage, spec, json.loads((run_dir / "summary.json").read_text()), before_kill


@pytest.mark.timeout(1800)
def test_summary_is_consistent(swept):
    storage, _, summary, _ = swept
    rows = {r["name"]: r for r in summary["variants"]}
    assert summary["kind"] == "sweep" and summary["baseline"] == "cnn-w0.25-d2-float"
    assert set(rows) == {"cnn-w0.25-d2-float", "cnn-w0.25-d2-int8", "cnn-w0.25-d2-p75-int8"}
    for name in summary["pareto"]["size_bytes_gzip"]:
        assert not any(dominates(o, rows[name], "size_bytes_gzip") for o in rows.values())
    for name, row in rows.items():
        if name not in summary["pareto"]["size_bytes_gzip"]:
            assert any(dominates(o, row, "size_bytes_gzip") for o in rows.values())
    best = rows[summary["sweet_spot"]]
    assert not violations(best, summary["constraints"])
    assert best["size_bytes_gzip"] <= MAX_SIZE_KB * 1000
    feasible = [r for r in rows.values() if not violations(r, summary["constraints"])]
    assert best["accuracy"] == max(r["accuracy"] for r in feasible)
    run_dir = storage / "test-sweep"
    assert (run_dir / "best.tflite").read_bytes() == open(best["artifact"], "rb").read()
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and summary["sweet_spot"] in html  # size, latency, params, curves
    assert summary["sweet_spot"] in (run_dir / "report.md").read_text()


@pytest.mark.timeout(1800)
def test_failed_trial_is_reported_and_does_not_sink_the_sweep(swept):
    _, _, summary, _ = swept
    failed = {f["name"]: f["error"] for f in summary["failed"]}
    assert "cnn-w0.25-d2-broken" in failed and "injected failure" in failed["cnn-w0.25-d2-broken"]


@pytest.mark.timeout(1800)
def test_killed_driver_resumes_without_rerunning_finished_trials(swept):
    _, _, summary, before_kill = swept
    for path, mtime in before_kill.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was produced again: a finished trial ran twice"
    assert {r["name"] for r in summary["variants"]} == {
        "cnn-w0.25-d2-float", "cnn-w0.25-d2-int8", "cnn-w0.25-d2-p75-int8"}


@pytest.mark.timeout(1800)
def test_resubmitting_resumes_and_new_constraints_rechoose_without_training(swept):
    storage, spec, first, _ = swept
    trials = sorted(p.name for p in (storage / "test-sweep" / "trials").rglob("checkpoint_*"))
    # Whoever can write the storage root plants code in Tune's pickled state: a resume never loads it.
    marker = storage / "planted-code-ran"
    planted = pickle.dumps(Planted(str(marker)))
    pickles = list((storage / "test-sweep" / "tune").rglob("*.pkl"))
    assert pickles, "Tune wrote its state"
    for path in pickles:
        path.write_bytes(planted)
    document = yaml.safe_load(spec.read_text())
    document["constraints"] = {"min_accuracy": 0.999, "max_size_kb": 1.0}
    spec.write_text(yaml.safe_dump(document))
    done = run(spec, storage)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not marker.exists(), "a pickle from the storage root was loaded"
    assert "resuming: 1 of 1 scale trial(s) finished in an earlier attempt" in done.stderr
    assert sorted(p.name for p in (storage / "test-sweep" / "trials").rglob("checkpoint_*")) == trials
    summary = json.loads((storage / "test-sweep" / "summary.json").read_text())
    assert summary["sweet_spot"] is None and summary["closest"] in {r["name"] for r in summary["variants"]}
    assert set(summary["closest_violations"]) == {"min_accuracy", "max_size_kb"}
    assert [r["accuracy"] for r in summary["variants"]] == [r["accuracy"] for r in first["variants"]]
    assert "No variant meets every constraint" in (storage / "test-sweep" / "report.md").read_text()


@pytest.mark.timeout(300)
def test_resources_that_never_fit_are_refused_before_trials(ray_cluster, tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(sweep_document(scaling={"num_workers": 64, "cpus_per_worker": 1})))
    done = run(spec, tmp_path)
    assert done.returncode == 2
    assert re.search(r"64 workers x 1 CPU = 64 \+ data_cpus 1 \+ driver 0.1 = 65.1 CPUs, the cluster has \d+",
                     done.stderr), done.stderr[-2000:]
    assert not (tmp_path / "test-sweep" / "tune").exists()


@pytest.mark.timeout(1800)
def test_asha_runs_the_scale_trials_and_counts_their_epochs(swept):
    # One scale: ASHA never stops the first trial at a rung (test_tuning.py checks its cuts with
    # scripted trials on real Tune); here it drives real Train trials through a kill and a restore.
    _, _, summary, _ = swept
    assert summary["scale_trial_epochs"] == {"cnn-w0.25-d2": 2}
    assert summary["scale_trial_epochs_used"] == summary["scale_trial_epochs_full_grid"] == 2
    assert summary["stopped_early"] == []


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    """An Optuna sweep: 4 candidates over two widths, pruning ratios, quantization modes and distillation
    from the larger width, under 30 KB."""
    storage = tmp_path_factory.mktemp("search")
    spec = storage / "search.yaml"
    document = sweep_document(name="test-search", search={
        "algorithm": "optuna", "family": "cnn", "widths": {"min": 0.25, "max": 0.5, "step": 0.25}, "depths": [2],
        "num_samples": 4,
        "compression": {"sparsity": {"min": 0.6, "max": 0.9}, "quantize": ["none", "int8", "dynamic_range"],
                        "fine_tune_epochs": [1], "distill": True}})
    document["train"]["epochs"] = 1
    document["constraints"] = {"max_size_kb": 30}
    document["tune"] = {"scheduler": "fifo"}
    spec.write_text(yaml.safe_dump(document))
    done = run(spec, storage)
    assert done.returncode == 0, done.stderr[-5000:]
    return storage / "test-search", json.loads((storage / "test-search" / "summary.json").read_text())


@pytest.mark.timeout(1800)
def test_optuna_search_scores_candidates_and_never_trains_what_cannot_fit(searched):
    run_dir, summary = searched
    search = summary["search"]
    assert search["algorithm"] == "optuna" and search["trials"] == 4
    # The seed candidates come first: the smallest scale pruned and quantized, and the same student
    # distilled from the largest scale, which is trained as the teacher although its own files are too large.
    assert {"cnn-w0.25-d2-p0.8-int8-e1", "cnn-w0.5-d2-kd-cnn-w0.25-d2-p0.8-int8-e1"} <= set(search["scored"])
    assert "cnn-w0.5-d2" in search["scales_trained"]
    distilled = json.loads((run_dir / "variants" / "cnn-w0.5-d2-kd-cnn-w0.25-d2-p0.8-int8-e1" / "history.json")
                           .read_text())
    # The student trains for train.epochs (1 here), then is pruned for fine_tune_epochs.
    assert list(distilled) == ["step1-distill", "step2-prune"] and len(distilled["step1-distill"]) == 1
    rows = {r["name"]: r for r in summary["variants"]}
    for name in search["scored"]:
        score = json.loads((run_dir / "scores" / f"{name}.json").read_text())
        assert 0.0 < score["val_accuracy"] <= 1.0
        # The score is the measured file: its gzip size is the record's.
        assert score["size_bytes_gzip"] == rows[name]["size_bytes_gzip"]
    for name in search["skipped_by_size_bound"]:
        # Skipped before training: no score, no file.
        assert not (run_dir / "scores" / f"{name}.json").exists() and name not in rows
    trained = {p.name for p in (run_dir / "scales").iterdir()}
    assert trained == set(search["scales_trained"])
    assert {f"{s}-float" for s in trained} <= set(rows)
    best = rows[summary["sweet_spot"]]
    assert best["size_bytes_gzip"] <= 30_000


@pytest.mark.timeout(1800)
def test_a_resubmitted_search_continues_from_its_own_records(searched):
    run_dir, summary = searched
    search = summary["search"]
    scores = {path: path.stat().st_mtime_ns for path in (run_dir / "scores").iterdir()}
    done = run(run_dir.parent / "search.yaml", run_dir.parent)
    assert done.returncode == 0, done.stderr[-4000:]
    recorded = len(search["scored"]) + len(search["skipped_by_size_bound"])
    assert f"resuming: {recorded} of 4 candidate(s) scored in an earlier attempt" in done.stderr
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in scores.items()), "a scored candidate ran again"
    again = json.loads((run_dir / "summary.json").read_text())["search"]
    assert set(again["scored"]) >= set(search["scored"])

"""Faults injected for real on the local cluster: a Train worker killed mid-epoch, a node lost mid-run,
a sweep's driver killed mid-sweep. Each run must finish from its checkpoints, losing at most one epoch.

The outcomes (epochs repeated, recovery time, accuracy against an undisturbed run) are
printed so `pytest -s` shows them; docs/reliability.md records a run of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, train_document
from tests.test_sweep_job import sweep_document

# A same-seed rerun differs only by the nondeterminism of multi-worker float sums;
# 1,000 test rows make one image 0.1 pt.
ACCURACY_NOISE = 0.03
EPOCHS = 4


def start_job(spec: dict, storage: Path) -> subprocess.Popen:
    """`python -m jobs` as its own process group (a driver, as `ray job submit` would start it)."""
    path = storage / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    log = open(storage / f"{spec['name']}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "jobs", str(path), "--output", str(storage)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, storage: Path, name: str, timeout: float = 900) -> dict:
    assert process.wait(timeout=timeout) == 0, (storage / f"{name}.log").read_text()[-5000:]
    return json.loads((storage / name / "summary.json").read_text())


def wait_for(predicate, what: str, timeout: float = 600, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the job ended (exit {process.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def checkpoints(storage: Path, name: str) -> list[Path]:
    return sorted((storage / name / "train").glob("checkpoint_*"))


def train_workers(ray, driver_pid: int) -> list:
    """The live Ray Train worker actors of the job whose driver is `driver_pid`."""
    from ray.util.state import list_actors, list_jobs

    job_ids = [job.job_id for job in list_jobs() if job.driver_info and str(job.driver_info.pid) == str(driver_pid)]
    if not job_ids:
        return []
    return [actor for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE"),
                                                    ("job_id", "=", job_ids[0])])
            if actor.pid]


def fault_spec(name: str, **scaling) -> dict:
    base = train_document()
    return train_document(name=name, train={**base["train"], "epochs": EPOCHS},
                          scaling={"num_workers": 2, "cpus_per_worker": 1, "max_failures": 2, **scaling})


@pytest.fixture(scope="module")
def undisturbed(ray_cluster, tmp_path_factory) -> dict:
    storage = tmp_path_factory.mktemp("undisturbed")
    return finish(start_job(fault_spec("calm"), storage), storage, "calm")


def report(fault: str, summary: dict, baseline: dict, recovery_seconds: float) -> None:
    resources = summary["resources"]
    print(f"\n{fault}: epochs started {resources['epochs_started']} ({resources['epochs_repeated']} repeated), "
          f"{resources['worker_processes']} worker processes, wall {resources['wall_seconds']:.0f}s against "
          f"{baseline['resources']['wall_seconds']:.0f}s undisturbed (recovery cost {recovery_seconds:.0f}s), "
          f"test accuracy {summary['test_accuracy']:.4f} against {baseline['test_accuracy']:.4f}")


def assert_recovered(summary: dict, baseline: dict) -> None:
    resources = summary["resources"]
    assert summary["epochs_completed"] == EPOCHS
    assert resources["worker_processes"] > 2, "no worker was restarted: the fault did not land"
    assert resources["epochs_repeated"] <= 1
    assert sorted(set(resources["epochs_started"])) == list(range(EPOCHS))
    assert abs(summary["test_accuracy"] - baseline["test_accuracy"]) <= ACCURACY_NOISE


@pytest.mark.timeout(1200)
def test_worker_killed_mid_epoch_resumes_from_the_last_checkpoint(ray_client, undisturbed, tmp_path):
    job = start_job(fault_spec("worker-killed"), tmp_path)
    try:
        wait_for(lambda: checkpoints(tmp_path, "worker-killed"), "the first checkpoint", process=job)
        time.sleep(1.0)  # into the second epoch
        worker = wait_for(lambda: train_workers(ray_client, job.pid), "a live train worker", process=job)[-1]
        os.kill(worker.pid, signal.SIGKILL)
        summary = finish(job, tmp_path, "worker-killed")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    recovery = summary["resources"]["wall_seconds"] - undisturbed["resources"]["wall_seconds"]
    report("worker killed", summary, undisturbed, recovery)
    assert_recovered(summary, undisturbed)


def start_node(num_cpus: int) -> subprocess.Popen:
    """A second Ray node on this machine, joined to the local head, in its own process group."""
    from cluster import local

    return subprocess.Popen([local.ray_executable(), "start", "--address", "127.0.0.1:6379", "--num-cpus",
                             str(num_cpus), "--block", "--disable-usage-stats"],
                            env=local.client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.timeout(1200)
def test_node_lost_mid_run_recovers_on_the_remaining_capacity(ray_client, undisturbed, tmp_path):
    before = {node["NodeID"] for node in ray_client.nodes() if node["Alive"]}
    node = start_node(num_cpus=2)
    job = None
    try:
        added = wait_for(lambda: {n["NodeID"] for n in ray_client.nodes() if n["Alive"]} - before,
                         "the second node to join", timeout=120)
        node_id = added.pop()
        # SPREAD puts the two workers on different nodes, so one lands on the new node.
        job = start_job(fault_spec("node-lost", placement_strategy="SPREAD"), tmp_path)
        wait_for(lambda: [w for w in train_workers(ray_client, job.pid) if w.node_id == node_id],
                 "a train worker on the second node", process=job)
        wait_for(lambda: checkpoints(tmp_path, "node-lost"), "the first checkpoint", process=job)
        os.killpg(node.pid, signal.SIGKILL)  # the whole node at once: raylet, object store, workers
        summary = finish(job, tmp_path, "node-lost")
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        if job is not None and job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    recovery = summary["resources"]["wall_seconds"] - undisturbed["resources"]["wall_seconds"]
    report("node lost", summary, undisturbed, recovery)
    assert_recovered(summary, undisturbed)


@pytest.mark.timeout(2400)
def test_sweep_driver_killed_resumes_without_rerunning_finished_trials(ray_cluster, tmp_path):
    spec = sweep_document(name="driver-killed")
    spec["search"]["pipelines"] = [p for p in spec["search"]["pipelines"] if p["name"] != "broken"] + [
        {"name": "p50-int8", "pipeline": [{"prune": {"final_sparsity": 0.5, "exclude": ["logits"]}},
                                          {"quantize": {"mode": "int8"}}]}]
    run = tmp_path / "driver-killed"
    finished = run / "variants" / "cnn-w0.25-d2-int8" / "model.tflite"
    baseline = run / "scales" / "cnn-w0.25-d2" / "model.keras"
    job = start_job(spec, tmp_path)
    try:
        wait_for(finished.exists, "the first variant trial to finish", timeout=1200, process=job)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not (run / "summary.json").exists()
    kept = {path: path.stat().st_mtime_ns for path in (finished, baseline)}

    started = time.monotonic()
    summary = finish(start_job(spec, tmp_path), tmp_path, "driver-killed", timeout=1200)
    print(f"\ndriver killed: resumed sweep finished in {time.monotonic() - started:.0f}s")
    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was produced again: a finished trial ran twice"
    assert {r["name"] for r in summary["variants"]} == {
        "cnn-w0.25-d2-float", "cnn-w0.25-d2-int8", "cnn-w0.25-d2-p75-int8", "cnn-w0.25-d2-p50-int8"}
    assert summary["sweet_spot"] and not summary["failed"]
    assert (run / "best.tflite").exists() and (run / "report.html").exists()

"""Faults injected for real on the local cluster: a Train worker killed mid-epoch, a node lost mid-run.
Each run must finish from its checkpoints, repeating at most one epoch. (A sweep's driver killed
mid-sweep is in test_sweep_job.py: its sweep is resumed by the same spec.)

The outcomes (epochs repeated, recovery time, accuracy against an undisturbed run) are
printed so `pytest -s` shows them; docs/reliability.md records a run of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import E2E_TRAIN, start_job, sweetspot, train_document, wait_for

# A same-seed rerun differs only by the nondeterminism of multi-worker float sums;
# 1,000 test rows make one image 0.1 pt.
ACCURACY_NOISE = 0.03
EPOCHS = E2E_TRAIN["epochs"]


def start_train(spec: dict, storage: Path) -> subprocess.Popen:
    path = storage / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return start_job(path, storage)


def finish(process: subprocess.Popen, storage: Path, name: str, timeout: float = 900) -> dict:
    assert process.wait(timeout=timeout) == 0, (storage / f"{name}.log").read_text()[-5000:]
    return json.loads((storage / name / "summary.json").read_text())


def registered_checkpoint(storage: Path, name: str) -> str | None:
    """The checkpoint Ray Train would resume from: the one its checkpoint manager has registered.

    A checkpoint folder appears before every rank's report has reached the controller; a
    fault in that window loses it, so a test that means "after a checkpoint" waits for this.
    """
    snapshot = storage / name / "train" / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return None
    try:
        latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
    except (json.JSONDecodeError, KeyError):  # caught mid-write
        return None
    return latest["checkpoint_dir_name"] if latest else None


def written_checkpoint(storage: Path, name: str) -> str | None:
    """A checkpoint of the run whose files are all in its folder and match its meta.json: written whole,
    whether or not Ray Train has registered it yet."""
    from cluster.training.checkpoints import CheckpointError, read_meta

    for folder in sorted((storage / name / "train").glob("checkpoint_*"), reverse=True):
        try:
            read_meta(folder)
        except CheckpointError:
            continue
        return folder.name
    return None


def train_workers(ray, driver_pid: int) -> list:
    """The live Ray Train worker actors of the job whose driver is `driver_pid`."""
    from ray.util.state import list_actors, list_jobs

    alive = [actor for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
             if actor.pid]
    # Each job asked for by id: an unfiltered list_jobs returns only the oldest 100 of a long-lived cluster.
    mine = {job_id for job_id in {actor.job_id for actor in alive}
            if any(job.driver_info and str(job.driver_info.pid) == str(driver_pid)
                   for job in list_jobs(filters=[("job_id", "=", job_id)]))}
    return [actor for actor in alive if actor.job_id in mine]


def fault_spec(name: str, **scaling) -> dict:
    """The end-to-end train job's recipe, allowed to restart its workers."""
    return train_document(name=name, train=E2E_TRAIN,
                          scaling={"num_workers": 2, "cpus_per_worker": 1, "max_failures": 2, **scaling})


@pytest.fixture(scope="module")
def undisturbed(e2e_train_run) -> dict:
    """The same recipe run without a fault: the end-to-end train job (test_train_job checks its outputs)."""
    run, _ = e2e_train_run
    return json.loads((run / "summary.json").read_text())


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
    """Killed the moment the first epoch's checkpoint is written whole, before Ray Train may have registered
    it (the window that once cost two epochs): the run resumes from that checkpoint, never from scratch."""
    job = start_train(fault_spec("worker-killed"), tmp_path)
    try:
        workers = wait_for(lambda: train_workers(ray_client, job.pid), "the train workers", process=job)
        wait_for(lambda: written_checkpoint(tmp_path, "worker-killed"), "the first checkpoint", process=job,
                 interval=0.05)
        os.kill(workers[-1].pid, signal.SIGKILL)
        summary = finish(job, tmp_path, "worker-killed")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    recovery = summary["resources"]["wall_seconds"] - undisturbed["resources"]["wall_seconds"]
    report("worker killed", summary, undisturbed, recovery)
    assert_recovered(summary, undisturbed)
    assert summary["resources"]["epochs_started"].count(0) == 1, "the finished first epoch ran again"


def start_node(num_cpus: int, temp_dir: Path) -> subprocess.Popen:
    """A second Ray node on this machine, joined to the local head, in its own process group.

    It gets its own temp dir, as a second machine has its own disk. Sharing the head's would share
    its runtime_resources: the new node re-downloads a job's working_dir over the head's copy
    (`overwrite=True`), and a failed download there left every later `ray job submit` failing with
    "Local directory .../_ray_pkg_... does not exist on the cluster".
    """
    from cluster import local

    return subprocess.Popen([local.ray_executable(), "start", "--address", "127.0.0.1:6379", "--num-cpus",
                             str(num_cpus), "--temp-dir", str(temp_dir), "--block", "--disable-usage-stats"],
                            env=local.client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def head_working_dirs(ray_client) -> set[str]:
    """The job working_dirs unpacked on the head, which later jobs with the same files reuse."""
    session = Path(ray_client._private.worker._global_node.get_session_dir_path())
    return {path.name for path in (session / "runtime_resources" / "working_dir_files").glob("_ray_pkg_*")
            if path.is_dir()}


@pytest.mark.timeout(1200)
def test_node_lost_mid_run_recovers_on_the_remaining_capacity(ray_client, undisturbed, tmp_path):
    before = {node["NodeID"] for node in ray_client.nodes() if node["Alive"]}
    working_dirs = head_working_dirs(ray_client)
    # Short and outside pytest's tmp_path: Ray's socket paths live under it (107-character limit).
    node_temp_dir = Path(tempfile.mkdtemp(prefix="ss-node-"))
    node = start_node(num_cpus=2, temp_dir=node_temp_dir)
    job = None
    try:
        added = wait_for(lambda: {n["NodeID"] for n in ray_client.nodes() if n["Alive"]} - before,
                         "the second node to join", timeout=120)
        node_id = added.pop()
        # SPREAD puts the two workers on different nodes, so one lands on the new node.
        job = start_train(fault_spec("node-lost", placement_strategy="SPREAD"), tmp_path)
        wait_for(lambda: [w for w in train_workers(ray_client, job.pid) if w.node_id == node_id],
                 "a train worker on the second node", process=job)
        wait_for(lambda: registered_checkpoint(tmp_path, "node-lost"), "the first checkpoint", process=job)
        os.killpg(node.pid, signal.SIGKILL)  # the whole node at once: raylet, object store, workers
        summary = finish(job, tmp_path, "node-lost")
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        if job is not None and job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        shutil.rmtree(node_temp_dir, ignore_errors=True)
    assert working_dirs <= head_working_dirs(ray_client), "the lost node took the head's working_dirs with it"
    recovery = summary["resources"]["wall_seconds"] - undisturbed["resources"]["wall_seconds"]
    report("node lost", summary, undisturbed, recovery)
    assert_recovered(summary, undisturbed)


@pytest.mark.timeout(1500)
def test_a_job_stopped_and_sent_again_resumes_without_repeating_a_finished_epoch(ray_client, undisturbed, tmp_path):
    """`sweetspot stop` after the first epoch's checkpoint, then the same spec submitted again."""
    from cluster.training.checkpoints import read_meta

    spec = tmp_path / "stopped.yaml"
    spec.write_text(yaml.safe_dump(fault_spec("stopped")))
    submitted = sweetspot("submit", spec, "--output", tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_for(lambda: written_checkpoint(tmp_path, "stopped"), "the first checkpoint", interval=0.05)
    stopped = sweetspot("stop", job_id, "--wait", timeout=300)
    assert stopped.returncode == 0 and stopped.stdout.splitlines()[-1] == f"{job_id}: STOPPED", stopped.stdout
    finished = read_meta(tmp_path / "stopped" / "train" / written_checkpoint(tmp_path, "stopped"))["epoch"]
    assert 1 <= finished < EPOCHS, "the stop must land mid-run"
    again = sweetspot("submit", spec, "--output", tmp_path, "--wait", timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert summary["epochs_completed"] == EPOCHS
    assert summary["resources"]["epochs_started"] == list(range(finished, EPOCHS)), "a finished epoch ran again"
    assert abs(summary["test_accuracy"] - undisturbed["test_accuracy"]) <= ACCURACY_NOISE


MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")


def memory_jail(pid: int, limit_bytes: int) -> Path:
    """A cgroup-v1 memory group holding `pid`: its memory charged from now on may total `limit_bytes`,
    past which the kernel's OOM killer ends it, as it ends a process that outgrows its container."""
    group = MEMORY_CGROUPS / f"sweetspot-test-oom-{pid}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    (group / "cgroup.procs").write_text(str(pid))
    return group


def oom_kills(group: Path) -> int:
    lines = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
    return int(lines["oom_kill"])


@pytest.mark.timeout(1200)
@pytest.mark.skipif(not os.access(MEMORY_CGROUPS, os.W_OK),
                    reason="needs a writable cgroup-v1 memory controller to have the kernel OOM-kill a worker")
def test_a_worker_killed_for_memory_is_restarted_and_the_run_finishes(ray_client, undisturbed, tmp_path):
    """The kernel's OOM killer, not a signal sent by hand: a Train worker is moved into a memory cgroup
    that lets it grow 4 MB more, right after the first checkpoint; its next allocations get it killed."""
    job = start_train(fault_spec("oom-killed"), tmp_path)
    group = None
    try:
        workers = wait_for(lambda: train_workers(ray_client, job.pid), "the train workers", process=job)
        wait_for(lambda: written_checkpoint(tmp_path, "oom-killed"), "the first checkpoint", process=job,
                 interval=0.05)
        group = memory_jail(workers[-1].pid, 4 << 20)
        wait_for(lambda: oom_kills(group), "the kernel to OOM-kill the worker", timeout=300, process=job)
        summary = finish(job, tmp_path, "oom-killed")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        if group is not None:
            wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), "the jailed worker to be gone",
                     timeout=60)
            group.rmdir()
    recovery = summary["resources"]["wall_seconds"] - undisturbed["resources"]["wall_seconds"]
    report("worker OOM-killed", summary, undisturbed, recovery)
    assert_recovered(summary, undisturbed)

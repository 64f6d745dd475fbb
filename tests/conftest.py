"""Shared fixtures: the bundled sample, spec documents, and the real local Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

os.environ.setdefault("RAY_AUTH_MODE", "token")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "fashion_mnist_sample"


def train_document(**changes) -> dict:
    """A small valid train spec on the bundled sample; `changes` replace top-level sections."""
    document = {
        "version": 1,
        "kind": "train",
        "name": "test-train",
        "data": {"train": str(SAMPLE / "train.parquet"), "test": str(SAMPLE / "test.parquet"),
                 "num_classes": 10, "image_shape": [28, 28, 1], "validation_fraction": 0.1},
        "augment": [{"flip_left_right": {"p": 0.5}}],
        "model": {"family": "cnn", "width": 0.5, "depth": 2},
        "train": {"epochs": 2, "global_batch_size": 128, "seed": 0},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        # Short timings: these jobs test the pipeline, not the latency figures (the quickstart keeps the defaults).
        "evaluation": {"repetitions": 30, "batch_sizes": [32], "memory": False, "min_seconds": 0.1},
        "output": {"storage": "/tmp/sweetspot-tests"},
    }
    document.update(changes)
    return document


# The recipe of the end-to-end train job; the fault tests run the same recipe and compare against it.
E2E_TRAIN = {"epochs": 3, "global_batch_size": 128, "seed": 0}


def sample_pipeline(train_fraction: float, cache: bool = True):
    """The bundled sample's data spec, checked splits and epoch clock, as a job prepares them for Ray Data."""
    import ray

    from cluster.data.augment import EpochClock
    from cluster.data.pipeline import prepare
    from cluster.spec import DataSpec

    data = DataSpec(train=str(SAMPLE / "train.parquet"), test=str(SAMPLE / "test.parquet"), num_classes=10,
                    validation_fraction=0.1, train_fraction=train_fraction, cache=cache)
    return data, prepare(data, seed=0), ray.remote(num_cpus=0)(EpochClock).remote()


def ray_job_submit(spec_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit` of `python -m jobs <spec>` with the project as the working dir, as a user sends it."""
    from cluster import local

    command = [local.ray_executable(), "job", "submit", "--address", local.DASHBOARD_URL,
               "--working-dir", str(ROOT), "--", "python", "-m", "jobs", str(spec_path), *args]
    return subprocess.run(command, env=local.client_env(), capture_output=True, text=True, timeout=timeout)


def sweetspot(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The `sweetspot` console script in a subprocess, as a user runs it from the project folder."""
    from cluster import local

    script = Path(sys.executable).with_name("sweetspot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]
    environment = local.client_env()
    environment.update(env or {})
    return subprocess.run(command + [str(a) for a in args], env=environment, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def sweetspot_process(*args) -> subprocess.Popen:
    """`sweetspot` started in the background (text pipes), as `sweetspot()` runs it."""
    from cluster import local

    script = Path(sys.executable).with_name("sweetspot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]
    return subprocess.Popen(command + [str(a) for a in args], env=local.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def pytest_collection_modifyitems(items):
    """Mark every test that needs the cluster, so `pytest -m "not cluster"` is the fast lane."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local cluster started the way a user starts it (`ray start --head`), shared by the session.

    Left running afterwards: other sessions may share it, and `.ci/run` stops it.
    """
    from cluster import local

    local.up(num_cpus=4)
    yield local.DASHBOARD_URL


@pytest.fixture(scope="session")
def ray_client(ray_cluster):
    """This test process connected to the local cluster as a driver."""
    import ray

    ray.init(address="auto", ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def start_job(spec_path: Path, storage: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m jobs` as its own process group (a driver, as `ray job submit` starts one), logging beside the spec."""
    log = open(spec_path.with_suffix(".log"), "a")
    return subprocess.Popen([sys.executable, "-m", "jobs", str(spec_path), "--output", str(storage)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(predicate, what: str, timeout: float = 600, process: subprocess.Popen | None = None,
             interval: float = 0.5):
    """Poll `predicate` until it returns something true; fail if `process` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the job ended (exit {process.returncode}) before {what}")
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def e2e_train_run(ray_cluster, tmp_path_factory):
    """A 3-epoch, 2-worker train job sent with `sweetspot submit --wait`: its run folder and the submit's output.

    The spec lives outside the project and says 1 epoch; `--set train.epochs=3`
    must reach the job. test_train_job checks its outputs, test_cli the commands
    around it, and test_faults uses it as the undisturbed run its faulted runs match.
    """
    import yaml

    storage = tmp_path_factory.mktemp("runs")
    spec = tmp_path_factory.mktemp("specs") / "train.yaml"
    document = train_document(name="e2e", train={**E2E_TRAIN, "epochs": 1}, learning_curve=[0.25])
    document["evaluation"] = {"repetitions": 50, "batch_sizes": [32, 256], "price_per_cpu_hour": 0.05,
                              "min_seconds": 0.1}
    spec.write_text(yaml.safe_dump(document))
    arguments = ["--set", f"train.epochs={E2E_TRAIN['epochs']}", "--output", str(storage)]
    submit = sweetspot_process("submit", spec, *arguments, "--wait")
    # While it runs, the same job sent again through `ray job submit` finds its run folder claimed.
    wait_for((storage / "e2e" / "claim.json").exists, "the first job to claim its run folder", timeout=300,
             process=submit)
    second = ray_job_submit(spec, *arguments)
    (storage / "second-submit.json").write_text(json.dumps(
        {"returncode": second.returncode, "output": second.stdout + second.stderr}))
    stdout, stderr = submit.communicate(timeout=600)
    done = subprocess.CompletedProcess(submit.args, submit.returncode, stdout, stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return storage / "e2e", done


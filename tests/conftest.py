"""Shared fixtures: the bundled sample, spec documents, and the real local Ray cluster."""

from __future__ import annotations

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
        "output": {"storage": "/tmp/sweetspot-tests"},
    }
    document.update(changes)
    return document


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


def wait_for(predicate, what: str, timeout: float = 600, process: subprocess.Popen | None = None):
    """Poll `predicate` until it returns something true; fail if `process` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the job ended (exit {process.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")

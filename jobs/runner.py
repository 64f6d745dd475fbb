"""Run a validated spec as the job of its kind, turning expected failures into one clear line."""

from __future__ import annotations

import sys

from cluster.data import DataError
from cluster.storage import StorageError
from cluster.training.checkpoints import CheckpointError
from cluster.training.resources import ResourceError
from jobs.common import JobFailed


def run(spec) -> int:
    from jobs.train import run_train

    kinds = {"train": run_train}
    try:
        kinds[spec.kind](spec)
    except (DataError, ResourceError, CheckpointError, StorageError, JobFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

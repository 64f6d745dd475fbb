"""Run a validated spec as the job of its kind, turning expected failures into one clear line."""

from __future__ import annotations

import sys

from cluster.data import DataError
from cluster.storage import StorageError
from cluster.training.checkpoints import CheckpointError
from cluster.training.resources import ResourceError
from jobs.common import JobFailed


def run(spec) -> int:
    """0 on success; 2 for bad input (nothing trained); 1 when training itself failed."""
    from cluster.compression.errors import CompressionError
    from cluster.training.trainer import TrainingFailed
    from cluster.tuning.space import UnreachableConstraint
    from cluster.evaluation.errors import ArtifactError
    from jobs.compress import run_compress
    from jobs.evaluate import run_evaluate
    from jobs.sweep import run_sweep
    from jobs.train import run_train

    kinds = {"train": run_train, "compress": run_compress, "sweep": run_sweep, "evaluate": run_evaluate}
    try:
        kinds[spec.kind](spec)
    except (DataError, ResourceError, CheckpointError, StorageError, CompressionError, UnreachableConstraint,
            ArtifactError, JobFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

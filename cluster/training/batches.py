"""How a global batch and the train rows divide between workers and replicas: one arithmetic for the
driver (pruning schedules, checks) and every worker's loop."""

from __future__ import annotations


def replicas_per_worker(scaling) -> int:
    """Model replicas on each worker: one per GPU it holds, or one on its CPUs."""
    return max(1, int(scaling.gpus_per_worker)) if scaling.use_gpu else 1


def batch_split(global_batch_size: int, workers: int, replicas: int) -> tuple[int, int]:
    """(per-replica batch, per-worker batch) of a global batch over `replicas` replicas on `workers` workers.

    The per-replica batch is rounded down, so when the global batch does not divide by the
    replicas a step takes slightly fewer rows than asked: every replica has the same batch.
    """
    per_replica = max(1, global_batch_size // replicas)
    return per_replica, per_replica * (replicas // workers)


def epoch_steps(train_rows: int, workers: int, replicas: int, global_batch_size: int) -> int:
    """Full steps per epoch after Ray Data's equal split (each worker drops its last partial batch)."""
    _, per_worker = batch_split(global_batch_size, workers, replicas)
    return (train_rows // workers) // per_worker


def steps_per_epoch(train_rows: int, scaling, global_batch_size: int) -> int:
    """`epoch_steps` for a spec's scaling: what every worker's loop will run."""
    workers = scaling.num_workers
    return epoch_steps(train_rows, workers, workers * replicas_per_worker(scaling), global_batch_size)

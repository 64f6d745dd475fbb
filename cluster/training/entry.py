"""The functions Ray Train runs on each worker: they ask for the data shards, then load TensorFlow.

When Ray Train splits the datasets (several workers streaming rows from the files), Ray Data
starts each split's coordinator (an actor process of its own) on a worker's first request for
its shard. Asked for before TensorFlow's import (3-4 s on 2 cores), the coordinators start while
TensorFlow loads instead of after it. Nothing streams yet: an epoch starts when every worker
iterates its shard. A worker given its own datasets (`trainer.run_training`) has nothing to ask for.
"""

from __future__ import annotations

import ray.train


def open_shards(config: dict) -> None:
    if config.get("datasets") is not None:  # a lone worker's own: nothing to start
        return
    ray.train.get_dataset_shard("train")
    if config.get("held_validation") is None:  # else each worker reads its rows from the object store
        ray.train.get_dataset_shard("validation")


def train_loop_per_worker(config: dict) -> None:
    """Train the spec's model (`loop.train_model`)."""
    open_shards(config)
    from cluster.training import loop  # deferred on purpose: TensorFlow loads after the shards are asked for

    loop.train_model(config)


def finetune_loop_per_worker(config: dict) -> None:
    """Fit the fine-tuned steps of every planned variant in turn (`loop.fit_variants`)."""
    open_shards(config)
    from cluster.training import loop  # deferred on purpose: TensorFlow loads after the shards are asked for

    loop.fit_variants(config)

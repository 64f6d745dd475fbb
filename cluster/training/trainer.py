"""Build Ray Train's TensorflowTrainer from a spec."""

from __future__ import annotations

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from cluster import WORKER_ENV
from cluster.training.loop import train_loop_per_worker


def scaling_config(scaling) -> ScalingConfig:
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    return ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                         resources_per_worker=resources, placement_strategy=scaling.placement_strategy)


def steps_per_epoch(train_rows: int, scaling, global_batch_size: int) -> int:
    """Full global batches per epoch after Ray Data's equal split (each worker drops its last partial batch)."""
    per_worker_rows = train_rows // scaling.num_workers
    per_worker_batch = max(1, global_batch_size // scaling.num_workers)
    return per_worker_rows // per_worker_batch


def build_trainer(spec, datasets: dict[str, ray.data.Dataset], clock, train_rows: int, validation_rows: int,
                  storage_path: str, run_name: str) -> TensorflowTrainer:
    config = {
        "spec": spec.model_dump(mode="json"),
        "clock": clock,
        "train_rows": train_rows,
        "validation_rows": validation_rows,
    }
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling_config(spec.scaling),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split="all"),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": WORKER_ENV},
        ),
    )

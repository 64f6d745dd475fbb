"""Build and run a Ray Train run of MultiWorkerMirroredStrategy workers on the Ray Data pipeline."""

from __future__ import annotations

import os

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster import WORKER_ENV
from cluster.data.augment import EpochClock
from cluster.data.pipeline import HeldSplit, PreparedData, run_inputs
from cluster.errors import TrainingFailed
from cluster.training.backend import MultiWorkerConfig
from cluster.training.usage import WorkerUsage


# Ray Train retries placing a worker group forever by default (each try waits
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s): after a node is lost for good
# that is a silent hang, so give up after this many tries and say why.
WORKER_GROUP_START_ATTEMPTS = 3


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), so
# it sees a run's end up to that late, and every sweep trial and fine-tuning step pays it. Ray passes
# the driver's value on to the controller and the workers.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


@ray.remote(num_cpus=0)
class RunLog(EpochClock, WorkerUsage):
    """A run's bookkeeping, owned by its driver: the epoch clock the augmentation stage reads, and the
    workers' resource use. One actor for both: each actor is a process to start (about 1.7 CPU-s)."""

    def __init__(self) -> None:
        EpochClock.__init__(self)
        WorkerUsage.__init__(self)


class Trainer(DataParallelTrainer):
    """Ray Train's data-parallel trainer on `backend.MultiWorkerConfig`, starting only the helper actors its
    run needs: each is a process to start, about 2 CPU-s on 2 cores.

    Not Ray's `TensorflowTrainer`, which is this class with Ray's `TensorflowConfig`: its constructor
    imports `ray.train.tensorflow`, which loads TensorFlow (2.5 CPU-s, 504 MB of peak RSS) in the process
    that starts the run, and a sweep's scale-trial actor, which only starts one, never needs it.

    - The placement-group cleaner, only if `placement_group_cleaner`. It is a detached actor per run that
      queries the State API every second, to remove the worker group's placement group if the controller
      dies while its job lives on. A run in a job's driver fails the job when its controller dies, and the
      job's end removes the group (measured: 4 alternating pairs of a 25 % train job, 2.0 s of run wall
      and 3.7 CPU-s less a run); a Tune trial lives on after a failed run, so its runs keep it.
    - The dataset manager, only if the run is given datasets to split: a lone worker, or each of several
      with its own share of held rows, reads its datasets itself (`run_training`).
    """

    def __init__(self, *args, placement_group_cleaner: bool, **kwargs):
        super().__init__(*args, backend_config=MultiWorkerConfig(), **kwargs)
        self.placement_group_cleaner = placement_group_cleaner

    def _create_default_callbacks(self):
        unneeded = []
        if not self.placement_group_cleaner:
            unneeded.append(PlacementGroupCleanerCallback)
        if not self.datasets:
            unneeded.append(DatasetsCallback)
        return [callback for callback in super()._create_default_callbacks()
                if not isinstance(callback, tuple(unneeded))]


def started_by_job_driver() -> bool:
    """Whether this process is a job's driver, not a Ray worker (a Tune trial's actor, a task)."""
    return ray.get_runtime_context().worker.mode != ray.WORKER_MODE


def failure_message(error: BaseException, scaling) -> str:
    """Ray's error, prefixed with what it means for the user when the workers no longer fit."""
    text = str(error)
    # Ray wraps the startup timeout in its controller error, so match its text, not its type.
    if "worker group startup timed out" in text:
        from cluster.training.resources import Capacity

        capacity = Capacity.of_cluster()
        return (f"the cluster no longer has room for {scaling.num_workers} worker(s) x "
                f"{scaling.cpus_per_worker:g} CPU (it now has {capacity.cpus:g} CPUs, at most "
                f"{capacity.node_cpus:g} on one node) after {WORKER_GROUP_START_ATTEMPTS} attempts; "
                f"a node was probably lost. Ray said: {text}")
    return text


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Schedule on the node running the caller (the job's driver, or a Tune trial), nowhere else."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def scaling_config(scaling) -> ScalingConfig:
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    return ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                         resources_per_worker=resources, placement_strategy=scaling.placement_strategy)


def run_training(loop, config: dict, job, prepared: PreparedData, seed: int, storage_path: str,
                 run_name: str, callbacks=()) -> tuple[Result, dict]:
    """Run `loop` on every worker over fresh train/validation inputs; resumes `run_name` if it exists.

    `job` is a spec with `data`, `augment` and `scaling`; `config` gets the
    split sizes, the validation split when it is held in the object store (`held_validation`), and
    the run's `RunLog` (`run_log`: its epoch clock and its usage log) added. Returns Ray
    Train's result and the workers' resource use (CPU seconds, peak RSS) with the
    run's epoch starts (`epochs_started`, `epochs_repeated`: what failures cost).
    `callbacks` go to Ray Train (e.g. Tune's TuneReportCallback inside a trial).
    """
    # The run's log lives on this process's node: placed elsewhere, losing that
    # node would lose the run's epoch log and usage after training recovered.
    log = RunLog.options(scheduling_strategy=on_this_node()).remote()
    inputs = run_inputs(prepared, job.data, [op.model_dump() for op in job.augment], seed, log,
                        workers=job.scaling.num_workers)
    held = inputs.validation if isinstance(inputs.validation, HeldSplit) else None
    # Ray Train splits streamed datasets between workers with a dataset manager and a split coordinator
    # per dataset: actor processes. A lone worker is given its datasets whole, and with held rows each of
    # several workers its own share, and iterates them itself (`loop.dataset_shard`). Measured on a 25 %
    # train job, 1 worker x 2 CPUs, 4 alternating pairs each: without the split coordinator, run wall
    # median 18.6 -> 16.1 s and machine CPU 39.3 -> 32.9 CPU-s; then without the dataset manager too,
    # 18.2 -> 15.0 s and 37.3 -> 32.1 CPU-s. 2 workers x 1 CPU with their own shares, 3 epochs: 22.2 ->
    # 17.2 s and 46.5 -> 37.9 CPU-s (4 pairs); on the whole sample, 25.0 -> 24.1 s, 50.4 -> 47.4 CPU-s (6 pairs).
    own = inputs.per_worker(job.scaling.num_workers)
    config = {**config, "run_log": log, "held_validation": held, "datasets": own,
              "run_folder": f"{storage_path.rstrip('/')}/{run_name}",
              "train_rows": prepared.plan.train_rows,
              "validation_rows": prepared.plan.validation_rows, "num_classes": job.data.num_classes,
              "image_shape": list(job.data.image_shape)}
    trainer = Trainer(
        loop,
        train_loop_config=config,
        scaling_config=scaling_config(job.scaling),
        datasets=None if own is not None else inputs.streamed(),
        dataset_config=DataConfig(datasets_to_split="all"),
        placement_group_cleaner=not started_by_job_driver(),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=job.scaling.max_failures,
                                         controller_failure_limit=WORKER_GROUP_START_ATTEMPTS),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": WORKER_ENV},
            callbacks=list(callbacks),
        ),
    )
    try:
        result = trainer.fit()
        used, started = ray.get([log.summary.remote(), log.epochs_started.remote()])
        used.update(epochs_started=started, epochs_repeated=len(started) - len(set(started)))
    except Exception as error:  # Ray raises its own error types for a failed run
        raise TrainingFailed(f"{storage_path}/{run_name}: training failed: "
                             f"{failure_message(error, job.scaling)}") from error
    finally:
        ray.kill(log)
    if result.checkpoint is None:
        raise TrainingFailed(f"{storage_path}/{run_name}: training finished without a checkpoint")
    return result, used

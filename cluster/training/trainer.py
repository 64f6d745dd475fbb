"""Build and run Ray Train's TensorflowTrainer on the Ray Data pipeline."""

from __future__ import annotations

import os

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
# The class `ray.train.tensorflow` exports, from the module that defines it: that package's import loads
# TensorFlow, which a process that only starts a run (a sweep's scale trial) never needs.
from ray.train.v2.tensorflow.tensorflow_trainer import TensorflowTrainer
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


class JobDriverTrainer(TensorflowTrainer):
    """TensorflowTrainer without Ray Train's placement-group cleaner, for a run started by a job's driver.

    The cleaner is a detached actor per run: a process to start, and a State API query every second, to
    remove the worker group's placement group if the controller dies while its job lives on. A run in a
    job's driver fails the job when its controller dies, and the job's end removes the group (measured:
    4 alternating pairs of a 25 % train job, 2.0 s of run wall and 3.7 CPU-s less a run). A Tune trial
    lives on after a failed run, so its runs keep the cleaner.
    """

    def _create_default_callbacks(self):
        return [callback for callback in super()._create_default_callbacks()
                if not isinstance(callback, PlacementGroupCleanerCallback)]


def trainer_class() -> type[TensorflowTrainer]:
    """The trainer for a run started by this process: a job's driver, or a Ray worker (a Tune trial's actor)."""
    return TensorflowTrainer if ray.get_runtime_context().worker.mode == ray.WORKER_MODE else JobDriverTrainer


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


def data_config(scaling) -> DataConfig:
    """Every dataset split between the workers; a lone worker iterates its datasets itself, since
    `streaming_split(1)` would start a split coordinator (an actor process) to hand it everything.
    Measured on a 25 % train job, 1 worker x 2 CPUs, 4 alternating pairs: run wall median 18.6 -> 16.1 s,
    39.3 -> 32.9 CPU-s of the machine's."""
    return DataConfig(datasets_to_split="all" if scaling.num_workers > 1 else [])


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
    inputs = run_inputs(prepared, job.data, [op.model_dump() for op in job.augment], seed, log)
    held = inputs.validation if isinstance(inputs.validation, HeldSplit) else None
    config = {**config, "run_log": log, "held_validation": held,
              "run_folder": f"{storage_path.rstrip('/')}/{run_name}",
              "train_rows": prepared.plan.train_rows,
              "validation_rows": prepared.plan.validation_rows, "num_classes": job.data.num_classes,
              "image_shape": list(job.data.image_shape)}
    trainer = trainer_class()(
        loop,
        train_loop_config=config,
        tensorflow_config=MultiWorkerConfig(),
        scaling_config=scaling_config(job.scaling),
        datasets=inputs.streamed(),
        dataset_config=data_config(job.scaling),
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

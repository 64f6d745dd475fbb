"""A sweep's scale trial: one scale's float baseline trained with Ray Train inside a Tune trial actor.

Kept apart from `cluster.tuning.sweep`, which loads TensorFlow (it builds,
converts and measures variants): a trial actor imports the module of the
function it runs, and this one only starts a Ray Train run. Its import peaks
at 188 MB of RSS against 768 MB for `sweep.py`'s; the trial's wall time did
not change measurably (its Ray Train run waits on the previous trial's teardown).
"""

from __future__ import annotations

import time

from ray.tune.integration.ray_train import TuneReportCallback

from cluster.data.pipeline import PreparedData
from cluster.runs import log
from cluster.spec import ModelSpec, SweepJob, TrainJob
from cluster.storage import RunStorage
from cluster.training.entry import train_loop_per_worker
from cluster.training.trainer import run_training
from cluster.tuning.space import Scale


def scale_train_job(spec: SweepJob, scale: Scale) -> TrainJob:
    return TrainJob(kind="train", name=f"{spec.name}-{scale.name}", data=spec.data, augment=spec.augment,
                    scaling=spec.scaling, evaluation=spec.evaluation, train=spec.train, output=spec.output,
                    model=ModelSpec(family=scale.family, width=scale.width, depth=scale.depth,
                                    dropout=spec.search.dropout))


def scale_trial(config: dict, spec_dump: dict, prepared: PreparedData, storage_uri: str,
                fail_trial: str | None = None) -> None:
    """Train one scale's float baseline with Ray Train; every epoch reaches Tune (and ASHA) with its checkpoint.

    The model is exported by the driver from the last checkpoint: ASHA stops a
    trial the moment it reports its final epoch, so nothing after `fit` is sure to run.
    """
    if fail_trial == config["name"]:
        raise RuntimeError(f"injected failure in trial {fail_trial} (SWEETSPOT_FAIL_TRIAL)")
    spec, scale = SweepJob.model_validate(spec_dump), Scale(**config["scale"])
    log(f"training {scale.name} ({spec.train.epochs} epochs)")
    started = time.monotonic()
    job = scale_train_job(spec, scale)
    result, _ = run_training(train_loop_per_worker, {"spec": job.model_dump(mode="json")}, job, prepared,
                             spec.train.seed, storage_path=RunStorage(storage_uri).path("trials"),
                             run_name=scale.name, callbacks=[TuneReportCallback()])
    accuracy = result.metrics.get("val_accuracy")
    shown = "-" if accuracy is None else f"{accuracy:.4f}"
    log(f"trained {scale.name}: validation accuracy {shown} in {time.monotonic() - started:.0f} s")

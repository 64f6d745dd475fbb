"""`kind: train`: check the data, train with Ray Train, export, measure, write the results.

Results under `<output.storage>/<name>/`:
    spec.yaml          the validated spec, every default filled in
    model.keras        the trained Keras model
    model.tflite       float TFLite export; input is raw pixels (0-255, H x W x C)
    checkpoint/        the last training checkpoint (init_from accepts it)
    metrics.jsonl      one line of metrics per epoch
    tensorboard/       the same metrics as TensorBoard scalars
    summary.json       test accuracy and the four sides of efficiency (compute, inference, data, resources)
    train/             Ray Train's run folder (checkpoints it resumes from)
    learning_curve/    one Ray Train run per `learning_curve` fraction
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray

from cluster.data.pipeline import load_arrays, prepare
from cluster.evaluation.efficiency import resource_summary
from cluster.evaluation.report import measure_artifact
from cluster.evaluation.keras_latency import measure_keras_model, runs_on_threads
from cluster.evaluation.export import export_tflite
from cluster.models import save_keras_model
from cluster.results import (DataEfficiency, EvaluationRecord, FileFigures, KerasFigures, LearningCurvePoint,
                             Resources, TrainedModels, TrainSummary)
from cluster.spec import TrainJob
from cluster.storage import RunStorage
from cluster.tf_datasets import in_memory_batches
from cluster.training import checkpoints
from cluster.training.entry import train_loop_per_worker
from cluster.training.resources import Capacity, check_training_fits
from cluster.training.batches import steps_per_epoch
from cluster.training.trainer import run_training
from cluster.runs import JobFailed, claim_run_folder, log

RAY_RUN_NAME = "train"


def write_tensorboard(history: list[dict], directory: Path) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        for metrics in history:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    tf.summary.scalar(key, value, step=metrics["epoch"])
    writer.close()


def export_and_measure(spec: TrainJob, model, history: list[dict], checkpoint_dir: str, images, labels,
                       storage: RunStorage) -> dict:
    """Export the Keras model and its float TFLite file, measure both, upload everything."""

    test_loss, test_accuracy = model.evaluate(in_memory_batches(images, labels, 512), verbose=0)
    evaluation = spec.evaluation
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        save_keras_model(model, scratch / "model.keras")
        tflite_path = export_tflite(model, scratch / "model.tflite")
        record = measure_artifact(tflite_path, images, labels, name="tflite-float", keras_model=model,
                                  num_threads=evaluation.num_threads, batch_sizes=tuple(evaluation.batch_sizes),
                                  repetitions=evaluation.repetitions, min_seconds=evaluation.min_seconds,
                                  measure_memory=evaluation.memory).model_dump()
        keras_latency = measure_keras_model(model, scratch / "model.keras", num_threads=evaluation.num_threads,
                                            batch_sizes=tuple(evaluation.batch_sizes),
                                            repetitions=evaluation.repetitions, min_seconds=evaluation.min_seconds)
        write_tensorboard(history, scratch / "tensorboard")
        artifacts = {
            "model_keras": storage.upload(scratch / "model.keras", "model.keras"),
            "model_tflite": storage.upload(tflite_path, "model.tflite"),
            "checkpoint": storage.upload(checkpoint_dir, "checkpoint"),
            "tensorboard": storage.upload(scratch / "tensorboard", "tensorboard"),
        }
    record["artifact"] = artifacts["model_tflite"]
    keras_figures = KerasFigures(artifact=artifacts["model_keras"], accuracy=float(test_accuracy),
                                 latency_ms_p50=keras_latency.latency_ms_p50,
                                 latency_ms_p95=keras_latency.latency_ms_p95,
                                 latency_ms_p99=keras_latency.latency_ms_p99,
                                 throughput_sps={str(b): v for b, v in keras_latency.throughput_sps.items()},
                                 num_threads=keras_latency.num_threads)
    return {
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "tflite_test_accuracy": record["accuracy"],
        "test_rows": int(len(labels)),
        **{field: record[field] for field in FileFigures.model_fields},
        "models": TrainedModels(tflite=EvaluationRecord(**record), keras=keras_figures),
        "artifacts": artifacts,
    }


def learning_curve(spec: TrainJob, storage: RunStorage, images, labels, test_accuracy: float, train_rows: int,
                   samples_seen: int) -> list[LearningCurvePoint]:
    """Test accuracy of the same recipe on class-balanced fractions of the train split; the full run last."""
    points = []
    for fraction in sorted(spec.learning_curve):
        if fraction >= 1.0:
            continue
        partial = spec.model_copy(update={"data": spec.data.model_copy(update={"train_fraction": fraction})})
        prepared = prepare(partial.data, partial.train.seed)
        log(f"learning curve: {fraction:.0%} of the train split ({prepared.plan.train_rows} rows)")
        result, _ = run_training(train_loop_per_worker, {"spec": partial.model_dump(mode="json")}, partial,
                                 prepared, partial.train.seed, storage_path=storage.path(),
                                 run_name=f"learning_curve/fraction-{fraction:g}")
        with result.checkpoint.as_directory() as directory:
            model, meta = checkpoints.restored_model(partial.model, partial.data, directory)
        points.append(LearningCurvePoint(
            fraction=fraction, train_rows=prepared.plan.train_rows, samples_seen=meta["history"][-1]["samples_seen"],
            test_accuracy=float(model.evaluate(in_memory_batches(images, labels, 512), verbose=0)[1])))
    points.append(LearningCurvePoint(fraction=spec.data.train_fraction, train_rows=train_rows,
                                     samples_seen=samples_seen, test_accuracy=test_accuracy))
    return points


def run_train(spec: TrainJob) -> TrainSummary:
    # This process's own TensorFlow work is light (restore, evaluate, convert). On the measured thread
    # count, set before its first op, it also times the Keras model: no second process loads TensorFlow
    # for that. (A user's model builder, checked before this, has run ops already: then a fresh one does.)
    runs_on_threads(spec.evaluation.num_threads)
    storage = RunStorage(f"{spec.output.storage.rstrip('/')}/{spec.name}")
    log(f"checking data: {spec.data.train} and {spec.data.test}")
    prepared = prepare(spec.data, spec.train.seed)
    steps = steps_per_epoch(prepared.plan.train_rows, spec.scaling, spec.train.global_batch_size)
    if steps == 0:
        raise JobFailed(f"train.global_batch_size ({spec.train.global_batch_size}) exceeds the "
                        f"{prepared.plan.train_rows} training rows: no full batch per epoch")
    log(f"data ok: {prepared.plan.train_rows} train, {prepared.plan.validation_rows} validation, "
        f"{prepared.test_rows} test rows; {steps} steps per epoch")

    ray.init(ignore_reinit_error=True)
    check_training_fits(spec.scaling, Capacity.of_cluster())
    claim_run_folder(spec, storage)  # every check has passed: the first write
    started = time.perf_counter()
    result, usage = run_training(train_loop_per_worker, {"spec": spec.model_dump(mode="json")}, spec, prepared,
                                 spec.train.seed, storage_path=storage.path(), run_name=RAY_RUN_NAME)
    wall_seconds = time.perf_counter() - started

    images, labels = load_arrays(prepared.test_source, spec.data)
    with result.checkpoint.as_directory() as checkpoint_dir:
        model, meta = checkpoints.restored_model(spec.model, spec.data, checkpoint_dir)
        history = meta["history"]
        measured = export_and_measure(spec, model, history, checkpoint_dir, images, labels, storage)
    storage.write_text("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))
    train_seconds = sum(m["train_seconds"] for m in history)
    samples_seen = history[-1]["samples_seen"] if history else 0
    summary = TrainSummary(
        name=spec.name,
        epochs_completed=history[-1]["epoch"] if history else 0,
        train_rows=prepared.plan.train_rows,
        validation_rows=prepared.plan.validation_rows,
        validation_accuracy=history[-1].get("val_accuracy") if history else None,
        **measured,
        train_seconds=train_seconds,
        wall_seconds=wall_seconds,
        samples_per_second=samples_seen / train_seconds if train_seconds else 0.0,
        samples_seen=samples_seen,
        workers=spec.scaling.num_workers,
        test_images_in_train=prepared.test_in_train,
        data_efficiency=DataEfficiency(
            accuracy_vs_samples_seen=[{"samples_seen": m["samples_seen"], "val_accuracy": m.get("val_accuracy")}
                                      for m in history],
            learning_curve=learning_curve(spec, storage, images, labels, measured["test_accuracy"],
                                          prepared.plan.train_rows, samples_seen)),
        resources=Resources(**resource_summary(spec.scaling, spec.evaluation, wall_seconds, usage)))
    summary.artifacts.update(metrics=storage.path("metrics.jsonl"), summary=storage.path("summary.json"),
                             ray_train_run=storage.path(RAY_RUN_NAME))
    storage.write_text("summary.json", summary.model_dump_json(indent=2))
    log(f"test accuracy {summary.test_accuracy:.4f} (TFLite {summary.tflite_test_accuracy:.4f}) after "
        f"{summary.epochs_completed} epochs, {summary.samples_per_second:.0f} samples/s; "
        f"results in {storage.path()}")
    return summary

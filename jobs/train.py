"""`kind: train`: check the data, train with Ray Train, export, measure, write the results.

Results under `<output.storage>/<name>/`:
    spec.yaml          the validated spec, every default filled in
    model.keras        the trained Keras model
    model.tflite       float TFLite export; input is raw pixels (0-255, H x W x C)
    checkpoint/        the last training checkpoint (init_from accepts it)
    metrics.jsonl      one line of metrics per epoch
    tensorboard/       the same metrics as TensorBoard scalars
    summary.json       test accuracy (Keras and TFLite), timings, sizes, paths
    train/             Ray Train's run folder (checkpoints it resumes from)
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray

from cluster.data.augment import EpochClock
from cluster.data.pipeline import load_arrays, prepare, train_datasets
from cluster.models import ModelShape, build_model
from cluster.spec import TrainJob
from cluster.storage import RunStorage
from cluster.training.resources import Capacity, check_training_fits
from cluster.training.trainer import build_trainer, steps_per_epoch
from jobs.common import JobFailed, claim_run_folder, log

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


def export_and_measure(spec: TrainJob, checkpoint_dir: str, prepared, storage: RunStorage) -> dict:
    """Rebuild the model from the last checkpoint, export it, and measure it on the test split."""
    import tf_keras as keras

    from cluster.evaluation.compute import compute_profile, gzip_size_bytes, size_bytes
    from cluster.evaluation.tflite import TFLiteModel, export_tflite
    from cluster.training import checkpoints

    model = build_model(spec.model.family, ModelShape(tuple(spec.data.image_shape), spec.data.num_classes),
                        spec.model.width, spec.model.depth, spec.model.dropout)
    meta = checkpoints.restore(checkpoint_dir, model)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    images, labels = load_arrays(prepared.test_source, spec.data)
    test_loss, test_accuracy = model.evaluate(images, labels, batch_size=512, verbose=0)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model.save(scratch / "model.keras")
        tflite_path = export_tflite(model, scratch / "model.tflite")
        tflite_accuracy = TFLiteModel(tflite_path).accuracy(images, labels)
        write_tensorboard(meta["history"], scratch / "tensorboard")
        profile = compute_profile(model)
        artifacts = {
            "model_keras": storage.upload(scratch / "model.keras", "model.keras"),
            "model_tflite": storage.upload(tflite_path, "model.tflite"),
            "checkpoint": storage.upload(checkpoint_dir, "checkpoint"),
            "tensorboard": storage.upload(scratch / "tensorboard", "tensorboard"),
        }
        sizes = {"size_bytes": size_bytes(tflite_path), "size_bytes_gzip": gzip_size_bytes(tflite_path)}
    return {
        "meta": meta,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "tflite_test_accuracy": float(tflite_accuracy),
        "test_rows": int(len(labels)),
        "params": profile.params,
        "flops": profile.flops,
        **sizes,
        "artifacts": artifacts,
    }


def run_train(spec: TrainJob) -> dict:
    storage = RunStorage(f"{spec.output.storage.rstrip('/')}/{spec.name}")
    claim_run_folder(spec, storage)
    log(f"checking data: {spec.data.train} and {spec.data.test}")
    prepared = prepare(spec.data, spec.train.seed)
    steps = steps_per_epoch(prepared.plan.train_rows, spec.scaling, spec.train.global_batch_size)
    if steps == 0:
        raise JobFailed(f"train.global_batch_size ({spec.train.global_batch_size}) exceeds the "
                        f"{prepared.plan.train_rows} training rows: no full batch per epoch")
    log(f"data ok: {prepared.plan.train_rows} train, {prepared.plan.validation_rows} validation, "
        f"{prepared.test_rows} test rows; {steps} steps per epoch")

    ray.init(ignore_reinit_error=True, log_to_driver=True)
    check_training_fits(spec.scaling, Capacity.of_cluster())
    clock = EpochClock.remote()
    datasets = train_datasets(prepared, spec.data, [op.model_dump() for op in spec.augment], spec.train.seed,
                              clock)
    trainer = build_trainer(spec, datasets, clock, prepared.plan.train_rows, prepared.plan.validation_rows,
                            storage_path=storage.path(), run_name=RAY_RUN_NAME)
    started = time.perf_counter()
    result = trainer.fit()
    wall_seconds = time.perf_counter() - started
    if result.error is not None:
        raise JobFailed(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise JobFailed("training finished without a checkpoint")

    with result.checkpoint.as_directory() as checkpoint_dir:
        measured = export_and_measure(spec, checkpoint_dir, prepared, storage)
    history = measured.pop("meta")["history"]
    storage.write_text("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))
    train_seconds = sum(m["train_seconds"] for m in history)
    samples = sum(m["samples_seen"] - (history[i - 1]["samples_seen"] if i else 0) for i, m in enumerate(history))
    summary = {
        "kind": "train",
        "name": spec.name,
        "epochs_completed": history[-1]["epoch"] if history else 0,
        "train_rows": prepared.plan.train_rows,
        "validation_rows": prepared.plan.validation_rows,
        "validation_accuracy": history[-1].get("val_accuracy") if history else None,
        **measured,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "samples_per_second": samples / train_seconds if train_seconds else 0.0,
        "workers": spec.scaling.num_workers,
    }
    summary["artifacts"]["metrics"] = storage.path("metrics.jsonl")
    summary["artifacts"]["summary"] = storage.path("summary.json")
    summary["artifacts"]["ray_train_run"] = storage.path(RAY_RUN_NAME)
    storage.write_text("summary.json", json.dumps(summary, indent=2))
    log(f"test accuracy {summary['test_accuracy']:.4f} (TFLite {summary['tflite_test_accuracy']:.4f}) after "
        f"{summary['epochs_completed']} epochs, {summary['samples_per_second']:.0f} samples/s; "
        f"results in {storage.path()}")
    return summary

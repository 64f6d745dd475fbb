"""The tiny-model point: how accurate a Fashion-MNIST model gets when its deployed int8 TFLite file is tiny.

Issue 8's target is >= 0.91 test accuracy at <= 8.2 KB gzip (TARGET_*).

Trains a model family in plain Keras on in-memory arrays (no Ray), compresses
it with the project's own pipeline (`cluster.compression.pipeline.run_pipeline`:
the same steps, schedules and conversion a compress job runs), and measures
the TFLite file the way the reports do: accuracy from the TFLite interpreter
on the test split, size gzipped at level 9 (KB = 1000 bytes, as
`max_size_kb` counts them).

    python -m bench.tiny_model                       # the recipe of configs/tiny_full.yaml (pruned75-int8)
    python -m bench.tiny_model --depth 3 --prune 0.7 --clusters 16 --float-model /tmp/dscnn-d3.keras

`run(recipe)` returns the measured figures as a dict for the benchmark harness.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
import tf_keras as keras

from cluster.compression import pipeline as compression
from cluster.data.decode import decode_column
from cluster.evaluation.files import gzip_size_bytes
from cluster.evaluation.tflite import TFLiteModel, write_bytes
from cluster.models import ModelShape, build_model, save_keras_model

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets",
                            "fashion_mnist")
SHAPE = ModelShape((28, 28, 1), 10)
TARGET_ACCURACY = 0.91
TARGET_SIZE_BYTES = 8200  # 8.2 KB gzip, KB = 1000 B


@dataclass(frozen=True)
class Recipe:
    """A model scale, its training, and the compression pipeline applied to it (compress-spec step dicts)."""

    family: str = "dscnn"
    width: float = 1.0
    depth: int = 4
    dropout: float | None = None
    epochs: int = 7
    batch_size: int = 128
    learning_rate: float = 4e-3
    augment: bool = False
    validation_fraction: float = 0.1
    pipeline: tuple = ({"prune": {"final_sparsity": 0.75, "exclude": ["stem", "logits"]}},
                       {"quantize": {"mode": "int8"}})
    fine_tune_epochs: int = 2
    fine_tune_learning_rate: float = 5e-4
    calibration_images: int = 512
    seed: int = 0


def limit_threads(threads: int = 1) -> None:
    """Keep TensorFlow to `threads` threads (call before it runs anything)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def load_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw float pixels (N, 28, 28, 1) in 0..255 and int64 labels of one split."""
    images, labels = [], []
    for path in sorted(glob.glob(os.path.join(data_dir, f"{split}-*.parquet"))):
        table = pq.read_table(path, columns=["image", "label"])
        images.append(decode_column(table.column("image"), SHAPE.image_shape))
        labels.append(table.column("label").to_numpy().astype(np.int64))
    if not images:
        raise FileNotFoundError(f"no {split}-*.parquet files in {data_dir}")
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


@dataclass(frozen=True)
class Data:
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def load_data(data_dir: str = DEFAULT_DATA, validation_fraction: float = 0.1, seed: int = 0) -> Data:
    """Train/validation split of the train files (a fixed shuffle) and the test split."""
    x, y = load_split(data_dir, "train")
    order = np.random.default_rng(seed).permutation(len(y))
    held = int(round(validation_fraction * len(y)))
    val, train = order[:held], order[held:]
    return Data((x[train], y[train]), (x[val], y[val]), load_split(data_dir, "test"))


def _augment(images, labels):
    images = tf.image.random_flip_left_right(images)
    shift = tf.random.uniform([2], -2, 3, dtype=tf.int32)
    images = tf.roll(images, shift, axis=[1, 2])
    return images, labels


def _dataset(data: Data, recipe: Recipe, augment: bool) -> tf.data.Dataset:
    x, y = data.train
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=recipe.seed).batch(recipe.batch_size)
    if augment:
        ds = ds.map(_augment)
    return ds.prefetch(2)


def _progress(label: str) -> keras.callbacks.Callback:
    """Prints each epoch's loss and time (to stdout, so a long run can be followed)."""
    started = {}
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.update(at=time.perf_counter()),
        on_epoch_end=lambda epoch, logs: print(
            f"{label} epoch {epoch + 1}: loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
            f"({time.perf_counter() - started['at']:.0f} s)", flush=True))


def _fit(model: keras.Model, data: Data, recipe: Recipe, epochs: int, learning_rate: float,
         callbacks=(), augment: bool = False, label: str = "train") -> None:
    """Adam with cosine decay over the run; logits, sparse labels."""
    steps = math.ceil(len(data.train[1]) / recipe.batch_size) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(_dataset(data, recipe, augment), epochs=epochs, callbacks=[*callbacks, _progress(label)], verbose=0)


def keras_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    logits = model.predict(images, batch_size=1000, verbose=0)
    return float(np.mean(logits.argmax(axis=1) == labels))


def train_float(recipe: Recipe, data: Data) -> keras.Model:
    """The float model of the recipe's scale, trained from scratch."""
    keras.utils.set_random_seed(recipe.seed)
    model = build_model(recipe.family, SHAPE, recipe.width, recipe.depth, recipe.dropout)
    _fit(model, data, recipe, recipe.epochs, recipe.learning_rate, augment=recipe.augment)
    return model


def compress(model: keras.Model, recipe: Recipe, data: Data) -> tuple[keras.Model, bytes]:
    """Run the recipe's compression pipeline; returns the final Keras model and the TFLite bytes."""
    steps_per_epoch = math.ceil(len(data.train[1]) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.fine_tune_epochs
    steps = [step.scheduled(total_steps) for step in compression.parse_pipeline(recipe.pipeline)]

    def fine_tune(step, prepared):
        _fit(prepared.model, data, recipe, recipe.fine_tune_epochs, recipe.fine_tune_learning_rate,
             prepared.callbacks, augment=recipe.augment, label=step.technique)

    calibration = data.train[0][:recipe.calibration_images]

    def representative_data():
        for start in range(0, len(calibration), 32):
            yield calibration[start:start + 32]

    return compression.run_pipeline(steps, model, fine_tune, representative_data)


def measure_tflite(tflite: bytes, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy from the TFLite interpreter and the file's size, raw and gzipped (level 9)."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_bytes(tflite, os.path.join(folder, "model.tflite"))
        return {"tflite_accuracy": TFLiteModel(path, num_threads=1).accuracy(images, labels),
                "size_bytes": len(tflite), "size_bytes_gzip": gzip_size_bytes(path)}


def run(recipe: Recipe = Recipe(), data: Data | None = None, data_dir: str = DEFAULT_DATA,
        float_model: keras.Model | None = None, save_tflite: str | None = None) -> dict:
    """Train (unless `float_model` is given), compress and measure; the figures as a dict."""
    data = data or load_data(data_dir, recipe.validation_fraction, recipe.seed)
    started = time.perf_counter()
    if float_model is None:
        float_model = train_float(recipe, data)
    trained = time.perf_counter()
    compressed, tflite = compress(float_model, recipe, data)
    finished = time.perf_counter()
    if save_tflite:
        write_bytes(tflite, save_tflite)
    test_x, test_y = data.test
    result = {
        "recipe": dataclasses.asdict(recipe),
        "params": int(float_model.count_params()),
        "float_keras_accuracy": keras_accuracy(float_model, test_x, test_y),
        "keras_accuracy": keras_accuracy(compressed, test_x, test_y),
        **measure_tflite(tflite, test_x, test_y),
        "train_seconds": round(trained - started, 1),
        "compress_seconds": round(finished - trained, 1),
    }
    result["meets_target"] = (result["tflite_accuracy"] >= TARGET_ACCURACY
                              and result["size_bytes_gzip"] <= TARGET_SIZE_BYTES)
    return result


def _pipeline(args) -> tuple:
    steps = []
    exclude = [name for name in args.exclude.split(",") if name]
    if args.prune:
        steps.append({"prune": {"final_sparsity": args.prune, "exclude": exclude}})
    if args.clusters:
        steps.append({"cluster": {"number_of_clusters": args.clusters, "preserve_sparsity": bool(args.prune),
                                  "exclude": exclude}})
    steps.append({"quantize": {"mode": "int8"}})
    return tuple(steps)


def main(argv=None) -> dict:
    defaults = Recipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--family", default=defaults.family)
    parser.add_argument("--width", type=float, default=defaults.width)
    parser.add_argument("--depth", type=int, default=defaults.depth)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--prune", type=float, default=0.75, help="final sparsity; 0 for none")
    parser.add_argument("--clusters", type=int, default=0, help="clusters per kernel; 0 for none")
    parser.add_argument("--exclude", default="stem,logits", help="layers left dense/unclustered")
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--float-model", help="reuse this saved float model if it exists, else save it there")
    parser.add_argument("--save-tflite", help="write the compressed TFLite file here")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    recipe = Recipe(args.family, args.width, args.depth, epochs=args.epochs, learning_rate=args.learning_rate,
                    augment=args.augment, pipeline=_pipeline(args), fine_tune_epochs=args.fine_tune_epochs,
                    seed=args.seed)
    float_model = None
    if args.float_model and os.path.exists(args.float_model):
        float_model = keras.models.load_model(args.float_model, compile=False)
    data = load_data(args.data, recipe.validation_fraction, recipe.seed)
    if float_model is None and args.float_model:
        started = time.perf_counter()
        float_model = train_float(recipe, data)
        save_keras_model(float_model, args.float_model)
        print(f"trained in {time.perf_counter() - started:.0f} s, saved to {args.float_model}", flush=True)
    result = run(recipe, data, float_model=float_model, save_tflite=args.save_tflite)
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()

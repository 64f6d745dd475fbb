"""Input pipeline: Ray Data decode + augmentation feeding Ray Train, against an in-process tf.data pipeline.

Two sides, the same model, batch and steps, each run alternating its epochs
between real input and in-memory tensors (real, in memory, real, in memory,
...; the first epoch of each kind is its warm-up: tracing, the stream's start),
in samples/s of `fit`:

* Ray: the project's path, `run_training` of its `train_loop_per_worker`: Ray
  Data reads the Parquet, decodes (PIL) once into the object store
  (`data.cache: true`, the default), and augments every epoch as a streaming
  stage (`cluster/data/augment.py`); Ray Train workers x CPUs per `scalings`.
  Its in-memory epochs are the same loop (model, strategy, steps, per-epoch
  timing) with the shard replaced by in-memory tensors of the same shape.
* tf.data: one process (intra-op threads = the machine's cores),
  `tf.io.decode_png` cached before training (as `data.cache`), then the same
  augmentation code (`augment_images`, via `tf.numpy_function`), shuffled,
  batched, prefetched; Keras `fit`. Its in-memory epochs: the same model on
  in-memory tensors.

Every per-epoch dataset on both sides (real and in memory) runs with the loop's
`cluster/tf_datasets.py: epoch_options` (no tf.data autotuning thread, whose join at an iterator's end
idled a process for seconds).

Input wait = 1 - (step time in memory / step time real) = 1 - real sps / in-memory sps,
both from the same run, minutes apart.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from bench import common

NAME = "input_pipeline"
# Half of full Fashion-MNIST (27,000 train rows, 105 steps of 256 per epoch): on the 5,400-row sample an
# epoch is ~1.3 s of compute and Ray Data's per-epoch start (a new streaming execution of the augmentation)
# about as long again, which hides the throughput. `measured_epochs` of each kind per run after its warm-up;
# `repetitions` runs per configuration in rotating order (every configuration runs once per repetition,
# each repetition starting one place later), so drift over the half hour reaches every configuration alike;
# the figure is the median over runs. Ray Train scalings are [workers, CPUs per worker]; a worker has as
# many TF threads as CPUs, so 1 x 2 and 2 x 1 train on both cores, as the in-process tf.data run does.
# (1 x 1 trains on one core against tf.data's two, so its ratio says little; its three runs would take
# the time the repetitions need within the 45-minute budget.)
# `to_tf_scalings` also run the path before `cluster.training.loop.shard_batches` and
# `cluster.data.pipeline.augment_batch_rows` (Ray's own `DataIterator.to_tf`, the augmentation on
# Ray Data's default batches) in the same loop, so the change is measured against it in the same bench run.
# `tfdata_layouts` ([processes, threads each]) also run tf.data outside Ray in that many processes under
# MultiWorkerMirroredStrategy, as Ray Train's workers train: the like-for-like baseline of a Ray row with as
# many workers (the strategy's all-reduce and its wait for the slower worker are on both sides there).
DEFAULT = {"full_data": True, "fraction": 0.5, "measured_epochs": 1, "repetitions": 3, "batch": 256,
           "scalings": [[1, 2], [2, 1]], "to_tf_scalings": [[1, 2]], "tfdata_layouts": [[2, 1]],
           "model": {"family": "cnn", "width": 1.0, "depth": 2}}
QUICK = {"full_data": False, "fraction": 0.25, "measured_epochs": 1, "repetitions": 1, "batch": 256,
         "scalings": [[1, 1]], "to_tf_scalings": [], "tfdata_layouts": [],
         "model": {"family": "cnn", "width": 0.5, "depth": 2}}
SHUFFLE_ROWS = 2048
MODES = ("real", "in_memory")


def epoch_plan(measured_epochs: int) -> list[str]:
    """real, in memory, real, in memory, ...: a warm-up epoch of each kind, then `measured_epochs` of each."""
    return list(MODES) * (1 + measured_epochs)


def by_mode(plan: list[str], per_epoch_sps: list[float], run_wall_seconds: float) -> dict:
    """Each kind's samples/s: the median of its epochs after its warm-up; both kinds share the run's wall time."""
    figures = {}
    for mode in MODES:
        epochs = [sps for kind, sps in zip(plan, per_epoch_sps) if kind == mode]
        figures[mode] = {"samples_per_second": common.steady(epochs), "per_epoch_sps": epochs,
                         "run_wall_seconds": run_wall_seconds}
    return figures


# ---------------------------------------------------------------- Ray Train side (runs in the workers)


def alternating_loop_per_worker(config: dict) -> None:
    """The project's `train_loop_per_worker`, unchanged but for its data: epochs per `config["plan"]`.

    Runs in a Ray Train worker process of its own, so rebinding the loop module's
    `distributed` (the one place the loop turns a shard into a TF dataset) affects only this run.
    Every worker follows the same plan, so they skip the Ray Data shard in the same epochs.
    """
    import tensorflow as tf

    from cluster.tf_datasets import epoch_options
    from cluster.training import entry, loop

    plan = config["plan"]
    real = ray_to_tf if config.get("input") == "to_tf" else loop.distributed
    shape, num_classes = tuple(config["spec"]["data"]["image_shape"]), config["spec"]["data"]["num_classes"]
    train_epochs = iter(plan)

    def alternating(strategy, shard, image_shape: tuple, batch_size: int, drop_last: bool, shuffle_seed,
                    feeds=None):
        # `run_epochs` asks for the train data with drop_last=True and for streamed validation data
        # without; validation always reads the real rows (it is outside the timed `fit`). An in-memory epoch
        # starts no stream: the shard sits that epoch out.
        if not drop_last or next(train_epochs) == "real":
            return real(strategy, shard, image_shape, batch_size, drop_last, shuffle_seed, feeds)
        images, labels = in_memory_tensors(batch_size * 8, shape, num_classes, shuffle_seed or 0)

        def dataset_fn(_context):
            return (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
                    .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
                    .with_options(epoch_options()))
        return strategy.distribute_datasets_from_function(dataset_fn)

    loop.distributed = alternating
    entry.train_loop_per_worker(config)


def ray_to_tf(strategy, shard, image_shape: tuple, batch_size: int, drop_last: bool, shuffle_seed, feeds=None):
    """Ray's own `DataIterator.to_tf`, as the loop used it before `shard_batches`: the comparison's "before"
    (its stream starts at the dataset's first use; `feeds` stays empty)."""
    import tensorflow as tf

    images, labels = tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((None,), tf.int64)

    def dataset_fn(_context):
        return shard.to_tf("image", "label", batch_size=batch_size, drop_last=drop_last,
                           local_shuffle_buffer_size=SHUFFLE_ROWS if shuffle_seed is not None else None,
                           local_shuffle_seed=shuffle_seed, feature_type_spec=images, label_type_spec=labels)
    return strategy.distribute_datasets_from_function(dataset_fn)


def in_memory_tensors(rows: int, shape: tuple, num_classes: int, seed: int):
    """Decoded-looking pixels (float32 0-255) and labels; speed does not depend on the values."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (rows, *shape)).astype(np.float32),
            rng.integers(0, num_classes, rows).astype(np.int64))


def ray_train_sps(job, prepared, plan: list[str], storage: str, run_name: str, input_path: str) -> dict:
    from unittest import mock

    from cluster.data import pipeline
    from cluster.training.trainer import run_training

    started = time.perf_counter()
    config = {"spec": job.model_dump(mode="json"), "plan": plan, "input": input_path}
    # The "before" path entire: Ray's `to_tf`, and the augmentation stage on Ray Data's default batches
    # (a block each) instead of `augment_batch_rows`. The datasets are built here, in the driver.
    before = mock.patch.object(pipeline, "augment_batch_rows", lambda _shape: None) if input_path == "to_tf" else None
    with before or contextlib.nullcontext():
        result, _ = run_training(alternating_loop_per_worker, config,
                                 job, prepared, job.train.seed, storage_path=storage, run_name=run_name)
    per_epoch = [float(m["samples_per_second"]) for m in common.ray_train_epochs(result)]
    return by_mode(plan, per_epoch, time.perf_counter() - started)


# ---------------------------------------------------------------- tf.data side (a fresh process)


def tfdata_probe(payload: dict) -> dict:
    """Train with tf.data in this process, real (decode + augment) then in memory; samples/s per epoch.

    With `workers` > 1 this process is worker `rank` of that many (`common.run_probe_group`), under
    MultiWorkerMirroredStrategy as a Ray Train worker is: it trains on its share of the rows (every
    `workers`-th), with its part of the global batch, and all-reduces the gradients every step.
    """
    import cluster  # noqa: F401
    import pyarrow.parquet as pq
    import tensorflow as tf

    from cluster.data.augment import augment_images
    from cluster.data.decode import row_keys
    from cluster.data.sources import resolve
    from cluster.models import ModelShape, build_model
    from cluster.spec import TrainSpec
    from cluster.tf_datasets import epoch_options
    from cluster.training.loop import compile_classifier
    from cluster.training.optim import build_optimizer

    threads = payload["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    rows, batch, plan, seed = payload["rows"], payload["batch"], payload["plan"], 0
    workers, rank = payload.get("workers", 1), payload.get("rank", 0)
    if workers > 1:
        from cluster.training.loop import quiet_device_datasets

        quiet_device_datasets()  # the per-device datasets get `epoch_options` too, as in the Ray loop
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    else:
        strategy = tf.distribute.get_strategy()
    encoded, labels = [], []
    for path in resolve(payload["train"], "train").files:
        table = pq.read_table(path, columns=["image", "label"])
        encoded += table.column("image").combine_chunks().field("bytes").to_pylist()
        labels += table.column("label").to_pylist()
    encoded, labels = encoded[:rows][rank::workers], np.asarray(labels[:rows][rank::workers], np.int64)
    ops = payload["augment"]
    worker_batch = batch // workers
    steps = (rows // workers) // worker_batch

    def decode(data, label):
        pixels = tf.io.decode_png(data, channels=1)
        key = tf.numpy_function(lambda p: np.asarray(row_keys(p[None])[0]), [pixels], tf.uint64)
        return pixels, label, key

    def augment(epoch):
        def fn(pixels, label, key):
            out = tf.numpy_function(lambda p, k: augment_images(p, k, ops, seed, epoch), [pixels, key], tf.float32)
            return tf.ensure_shape(out, [None, 28, 28, 1]), label
        return fn

    decoded = (tf.data.Dataset.from_tensor_slices((encoded, labels))
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache())
    # Decode once, before training, as the Ray path materializes its decoded split first. A cache
    # is kept only when a pass reads it to the end, which the epochs (whole batches only) do not.
    started = time.perf_counter()
    for _ in decoded:
        pass
    decode_seconds = time.perf_counter() - started

    def real(epoch):
        return (decoded.shuffle(SHUFFLE_ROWS, seed=epoch * workers + rank).batch(worker_batch, drop_remainder=True)
                .map(augment(epoch), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
                .with_options(epoch_options()))

    images, fake_labels = in_memory_tensors(worker_batch * 8, (28, 28, 1), 10, rank)
    memory = (tf.data.Dataset.from_tensor_slices((images, fake_labels)).repeat()
              .batch(worker_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(epoch_options()))

    def per_worker(dataset):
        """A worker's batches as the strategy's per-replica batches (the Ray loop's `distributed`)."""
        return dataset if workers == 1 else strategy.distribute_datasets_from_function(lambda _context: dataset)

    train = TrainSpec(epochs=len(plan), global_batch_size=batch)
    with strategy.scope():
        model = build_model(payload["model"]["family"], ModelShape((28, 28, 1), 10), payload["model"]["width"],
                            payload["model"]["depth"])
        # Keras's settings as the Ray path's train spec has them (the same steps per call).
        compile_classifier(model, build_optimizer(train, steps), 10, steps_per_execution=train.steps_per_execution)
    per_epoch, started = [], time.perf_counter()
    for epoch, mode in enumerate(plan):
        data = per_worker(real(epoch) if mode == "real" else memory)
        start = time.perf_counter()
        model.fit(data, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps, verbose=0)
        per_epoch.append(steps * worker_batch * workers / (time.perf_counter() - start))
    results = by_mode(plan, per_epoch, time.perf_counter() - started)
    return {**results, "threads": threads, "workers": workers, "replicas": strategy.num_replicas_in_sync,
            "rows": rows, "decode_seconds": decode_seconds}


# ---------------------------------------------------------------- the benchmark


def scaling_key(workers: int, cpus: int, input_path: str = "shard_batches") -> str:
    return f"ray_{workers}w" + (f"x{cpus}cpu" if cpus != 1 else "") + ("_to_tf" if input_path == "to_tf" else "")


def tfdata_key(workers: int, threads: int) -> str:
    """The tf.data run's key: one process ("tfdata"), or `workers` processes of `threads` under the strategy."""
    return "tfdata" if workers == 1 else f"tfdata_{workers}w" + (f"x{threads}t" if threads != 1 else "")


def rotated(order: list, rep: int) -> list:
    """`order` starting at place `rep`: each configuration takes each slot of a repetition in turn."""
    start = rep % len(order)
    return order[start:] + order[:start]


def wait_fraction(real: float | None, in_memory: float | None) -> float | None:
    return None if not real or not in_memory else max(0.0, 1.0 - real / in_memory)


def run(settings: dict, ctx: common.Context) -> dict:
    import os
    import sys

    from cluster.data.pipeline import prepare
    from cluster.spec import validate_document

    common.connect(sys.modules[__name__])
    data = common.data_section(settings["full_data"], settings["fraction"])
    storage = ctx.fresh("input_pipeline")
    reps = settings["repetitions"]
    plan = epoch_plan(settings["measured_epochs"])
    configs: dict[str, list[dict]] = {}

    def job_for(workers: int, cpus: int):
        return validate_document(common.train_document(
            "bench-input", data, settings["model"],
            {"epochs": len(plan), "global_batch_size": settings["batch"]}, storage,
            scaling={"num_workers": workers, "cpus_per_worker": cpus}))

    # Read and decode once for every run (the scalings share the data section).
    first = job_for(*settings["scalings"][0])
    prepared = prepare(first.data, first.train.seed)
    augment = [op.model_dump() for op in first.augment]
    ray_order = ([(*scaling, "shard_batches") for scaling in settings["scalings"]]
                 + [(*scaling, "to_tf") for scaling in settings.get("to_tf_scalings", [])])
    tfdata_order = [("tfdata", 1, os.cpu_count())] + [("tfdata", *layout) for layout in
                                                      settings.get("tfdata_layouts", [])]
    order = ray_order + tfdata_order
    for rep in range(reps):
        for config in rotated(order, rep):
            common.log(f"input_pipeline: {config}, repetition {rep + 1}/{reps}")
            if config[0] == "tfdata":
                _, workers, threads = config
                key = tfdata_key(workers, threads)
                payload = {"train": data["train"], "rows": prepared.plan.train_rows, "batch": settings["batch"],
                           "plan": plan, "model": settings["model"], "threads": threads, "augment": augment}
                measured = (common.run_probe(__name__, payload) if workers == 1
                            else common.run_probe_group(__name__, payload, workers))
            else:
                workers, cpus, input_path = config
                key = scaling_key(workers, cpus, input_path)
                measured = ray_train_sps(job_for(workers, cpus), prepared, plan, str(storage), f"{key}-{rep}",
                                         input_path)
            for mode in MODES:
                configs.setdefault(f"{key}_{mode}", []).append(measured[mode])
    medians = {key: common.median(r["samples_per_second"] for r in runs) for key, runs in configs.items()}
    spreads = {key: [min(r["samples_per_second"] for r in runs), max(r["samples_per_second"] for r in runs)]
               for key, runs in configs.items()}
    tfdata = medians["tfdata_real"]
    # A Ray row's like-for-like tf.data run: as many processes as workers, as many threads as CPUs each.
    same_layout = {(workers, threads): medians[f"{tfdata_key(workers, threads)}_real"]
                   for _, workers, threads in tfdata_order[1:]}
    comparisons = {}
    for workers, cpus, input_path in ray_order:
        key = scaling_key(workers, cpus, input_path)
        real = medians[f"{key}_real"]
        like = same_layout.get((workers, cpus))
        comparisons[key] = {
            "workers": workers, "cpus_per_worker": cpus, "input": input_path,
            "samples_per_second": real, "ratio_vs_tfdata": real / tfdata if tfdata else None,
            "ratio_vs_tfdata_same_layout": real / like if like else None,
            "input_wait_fraction": wait_fraction(real, medians[f"{key}_in_memory"])}
    for _, workers, threads in tfdata_order:
        key = tfdata_key(workers, threads)
        real = medians[f"{key}_real"]
        comparisons[key] = {"workers": workers, "threads": threads, "samples_per_second": real,
                            "ratio_vs_tfdata": real / tfdata if tfdata else None,
                            "input_wait_fraction": wait_fraction(real, medians[f"{key}_in_memory"])}
    from cluster.data.pipeline import augment_batch_rows
    from cluster.training.loop import PREFETCH_BATCHES

    return {"settings": settings, "plan": plan, "train_rows": prepared.plan.train_rows,
            "prefetch_batches": PREFETCH_BATCHES, "augment_batch_rows": augment_batch_rows(tuple(first.data.image_shape)),
            "tfdata_threads": os.cpu_count(), "augment": augment, "runs": configs, "medians": medians,
            "spreads": spreads, "comparisons": comparisons}


if __name__ == "__main__":
    common.probe_main(tfdata_probe)

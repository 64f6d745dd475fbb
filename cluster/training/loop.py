"""What every Ray Train worker runs: Keras `fit` under MultiWorkerMirroredStrategy, an epoch at a time.

Each epoch streams the worker's shard of the augmented train split from Ray
Data, then every rank reports its metrics and rank 0 attaches a checkpoint
(weights, optimizer state, epoch, history), so a restarted worker group
resumes from the last finished epoch.
"""

from __future__ import annotations

import os
import tempfile
import time

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import ray.train
import tensorflow as tf
import tf_keras as keras

from cluster.models import ModelShape, build_model
from cluster.training import checkpoints
from cluster.training.optim import build_optimizer

SHUFFLE_BUFFER_ROWS = 2048


def configure_devices(cpus_per_worker: float) -> None:
    """Threads to match the CPUs Ray reserved; GPU memory grows on demand (TF grabs it all otherwise)."""
    threads = max(1, int(cpus_per_worker))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def make_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """All local GPUs of each worker, NCCL collectives between GPUs, ring on CPU."""
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                      if tf.config.list_physical_devices("GPU")
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))


def distributed(strategy, shard, batch_size: int, drop_last: bool, shuffle_seed: int | None):
    """A worker's Ray Data shard as a distributed TF dataset of per-replica batches.

    Ray Data already split the rows between workers, so the dataset is given
    to the strategy per worker (no further sharding); each replica on the
    worker takes its own batches.
    """
    def dataset_fn(_context):
        return shard.to_tf("image", "label", batch_size=batch_size, drop_last=drop_last,
                           local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS if shuffle_seed is not None else None,
                           local_shuffle_seed=shuffle_seed)
    return strategy.distribute_datasets_from_function(dataset_fn)


def compile_model(model: keras.Model, optimizer, label_smoothing: float) -> None:
    if label_smoothing:
        # Label smoothing needs one-hot targets; the data holds class ids.
        num_classes = model.output_shape[-1]
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

        def loss(labels, logits):
            return loss_fn(tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes), logits)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def train_loop_per_worker(config: dict) -> None:
    """`config`: the dumped TrainJob spec, the split sizes, and `clock` (an EpochClock handle)."""
    from cluster.spec import TrainJob

    spec = TrainJob.model_validate(config["spec"])
    clock = config["clock"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    configure_devices(spec.scaling.cpus_per_worker)
    strategy = make_strategy()
    replicas = strategy.num_replicas_in_sync
    per_replica_batch = max(1, spec.train.global_batch_size // replicas)
    # Ray Data splits rows equally between workers, so every worker runs the
    # same number of steps (the collectives would hang otherwise).
    per_worker_batch = per_replica_batch * (replicas // world)
    steps_per_epoch = (config["train_rows"] // world) // per_worker_batch
    validation_steps = -(-(config["validation_rows"] // world) // per_worker_batch)
    keras.utils.set_random_seed(spec.train.seed)

    shape = ModelShape(tuple(spec.data.image_shape), spec.data.num_classes)
    with strategy.scope():
        model = build_model(spec.model.family, shape, spec.model.width, spec.model.depth, spec.model.dropout)
        optimizer = build_optimizer(spec.train, steps_per_epoch)
        compile_model(model, optimizer, spec.train.label_smoothing)

    start_epoch, history = 0, []
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as directory:
            # Build the optimizer's slots first so their state restores now, not lazily.
            optimizer.build(model.trainable_variables)
            meta = checkpoints.restore(directory, model, optimizer)
        start_epoch, history = meta["epoch"], meta["history"]
    elif spec.train.init_from:
        checkpoints.load_initial_weights(spec.train.init_from, model)

    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(start_epoch, spec.train.epochs):
        if rank == 0:
            # Ray Data starts this epoch's execution only after every worker asks for it.
            ray.get(clock.set.remote(epoch))
        started = time.perf_counter()
        train_data = distributed(strategy, train_shard, per_replica_batch, drop_last=True,
                                 shuffle_seed=spec.train.seed * 100_003 + epoch * 101 + rank)
        fit = model.fit(train_data, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps_per_epoch,
                        verbose=0)
        train_seconds = time.perf_counter() - started
        validation = {}
        if validation_steps:
            validation_data = distributed(strategy, validation_shard, per_replica_batch, drop_last=False,
                                          shuffle_seed=None)
            loss, accuracy = model.evaluate(validation_data, steps=validation_steps, verbose=0)
            validation = {"val_loss": float(loss), "val_accuracy": float(accuracy)}
        seen = steps_per_epoch * per_worker_batch * world
        metrics = {
            "epoch": epoch + 1,
            "loss": float(fit.history["loss"][-1]),
            "accuracy": float(fit.history["accuracy"][-1]),
            **validation,
            "learning_rate": float(keras.backend.get_value(optimizer.learning_rate)),
            "epoch_seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
            "samples_per_second": seen / train_seconds,
            "samples_seen": seen * (epoch + 1),
            "workers": world,
            "replicas": replicas,
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory() as directory:
            # Every worker writes (the save may run collectives); only rank 0's copy is kept.
            checkpoints.save(directory, model, optimizer,
                             {"epoch": epoch + 1, "history": history, "spec": config["spec"]})
            checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)
    if start_epoch >= spec.train.epochs and resume is not None:
        # A resumed run that was already complete still reports, so Result has metrics.
        ray.train.report(history[-1] if history else {"epoch": start_epoch})

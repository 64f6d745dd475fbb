"""What every Ray Train worker runs: Keras `fit` under MultiWorkerMirroredStrategy, an epoch at a time.

Two entry points share the epoch loop (`cluster.training.entry` calls them once
the worker's data shards are asked for): `train_model` trains a model
of the spec's family (or fine-tunes one from `init_from`), and
`fit_variants` fits the fine-tuned compression steps (prune,
cluster, QAT, distill) of one or more variants of a saved model, in turn, so
a job starts one worker group for all of them. Each epoch streams the worker's shard of the
augmented train split from Ray Data, then every rank reports its metrics and
rank 0 attaches a checkpoint (weights, optimizer state, epoch, history), so a
restarted worker group resumes from the last finished epoch.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import tempfile
import threading
import time
from dataclasses import dataclass

import ray.train
import ray.train.collective
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.data.ops import multi_device_iterator_ops

from cluster.models import ModelShape, build_model, compile_classifier
from cluster.spec import ScalingSpec, TrainJob, TrainSpec
from cluster.storage import RunStorage
from cluster.tf_datasets import epoch_options, in_memory_batches
from cluster.training import checkpoints
from cluster.training.optim import build_optimizer
from cluster.training.batches import batch_split, epoch_steps
from cluster.training.fine_tuning import VariantPlan, restore_record, walk
from cluster.training.usage import record as record_usage

SHUFFLE_BUFFER_ROWS = 2048
# Ray Data batches fetched ahead of the one the generator hands to tf.data (a training epoch's are the
# augmentation stage's blocks, of about `cluster.data.pipeline.AUGMENT_BATCH_BYTES` each).
PREFETCH_BATCHES = 4


def configure_devices(cpus_per_worker: float) -> None:
    """Threads to match the CPUs Ray reserved; GPU memory grows on demand (TF grabs it all otherwise)."""
    tf.get_logger().setLevel("ERROR")  # the strategy's INFO lines would drown the job's log
    threads = max(1, int(cpus_per_worker))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy across workers (NCCL between GPUs, ring on CPU); on a lone worker,
    MirroredStrategy over its GPUs, or TensorFlow's default strategy (one device, no collectives:
    a one-worker MultiWorkerMirroredStrategy measured 1.3-1.5x slower on a small CNN, one noisy run each)."""
    gpus = tf.config.list_physical_devices("GPU")
    quiet_device_datasets()
    if ray.train.get_context().get_world_size() == 1:
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))


def shard_batches(shard, image_shape: tuple, batch_size: int, drop_last: bool,
                  shuffle_seed: int | None, feeds: list | None = None) -> tf.data.Dataset:
    """A worker's Ray Data shard as a tf.data pipeline of (images, labels) batches, one epoch of it.

    The epoch starts streaming now, not at the dataset's first use, so a caller
    can build the next epoch's dataset while it does other work (the loop
    validates and checkpoints meanwhile). Its `EpochFeed` goes on `feeds`, for the
    caller to `finish` when it is done with the epoch.

    Not `DataIterator.to_tf`: that converts every batch in Python, prefetches one
    batch on the Ray side only, and shuffles in Ray's local buffer, which
    re-slices Arrow tables in Python for every batch. Here a thread of our own
    reads the epoch's numpy batches from Ray Data (fetched ahead; a shuffled
    epoch's as whole blocks) into a small queue, the generator hands them to
    tf.data whole, and tf.data shuffles rows in its C++ buffer, batches and
    prefetches. The thread always reads the epoch to its end, also when Keras
    stops before the generator does (`steps_per_epoch` reached), so no epoch
    of the stream is left half-read when the next starts.
    """
    signature = (tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((None,), tf.int64))
    shuffle = shuffle_seed is not None

    # A shuffled epoch is cut into batches after tf.data's shuffle, so Ray Data hands over its blocks
    # whole (the augmentation stage's, `augment_batch_rows` each) rather than slicing and joining them
    # into batches in Python first: a 1 x 2 run's input wait fell from 8.6 % to 2.9 % (medians of 3
    # alternating pairs, half of Fashion-MNIST).
    feed = EpochFeed(shard.iter_batches(batch_size=None if shuffle else batch_size, batch_format="numpy",
                                        prefetch_batches=PREFETCH_BATCHES, drop_last=drop_last and not shuffle))
    if feeds is not None:
        feeds.append(feed)

    def generator():
        try:
            yield from feed
        finally:
            feed.finish()

    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
    if shuffle:
        # Batched again after the shuffle, so `drop_last` applies to the shuffled batches.
        dataset = dataset.unbatch().shuffle(SHUFFLE_BUFFER_ROWS, seed=shuffle_seed).batch(
            batch_size, drop_remainder=drop_last)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(epoch_options())


class EpochFeed:
    """One epoch of numpy batches read on a thread of its own into a bounded queue.

    Iterating yields (images, labels) until the epoch ends; `finish` reads what
    the consumer left (discarding it) and waits for the thread, so Ray Data's
    iterator always runs to its end.
    """

    _END = object()

    def __init__(self, batches):
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
        self._discard = threading.Event()
        self._iterated = False
        self._thread = threading.Thread(target=self._read, args=(batches,), name="epoch-feed", daemon=True)
        self._thread.start()

    def _read(self, batches) -> None:
        try:
            for batch in batches:
                if not self._discard.is_set():
                    self._put((batch["image"], batch["label"]))
            self._put(self._END)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def _put(self, item) -> None:
        while not self._discard.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        if self._iterated:  # a second pass would wait forever on the emptied queue
            raise RuntimeError("an EpochFeed is one epoch: it was iterated already")
        self._iterated = True
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def finish(self) -> None:
        self._discard.set()
        self._thread.join()
        # A consumer still waiting (tf.data's prefetch thread, when the caller ends the epoch before
        # the dataset's iterator is gone) gets the end, not a wait forever on the emptied queue.
        while True:
            try:
                self._queue.put_nowait(self._END)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()


def distributed(strategy, shard, image_shape: tuple, batch_size: int, drop_last: bool, shuffle_seed: int | None,
                feeds: list | None = None):
    """A worker's shard as a distributed TF dataset of per-replica batches; its epoch starts streaming now.

    Ray Data already split the rows between workers, so the dataset is given
    to the strategy per worker (no further sharding); each replica on the
    worker takes its own batches. (tf.distribute calls the function at once.)
    """
    return strategy.distribute_datasets_from_function(
        lambda _context: shard_batches(shard, image_shape, batch_size, drop_last, shuffle_seed, feeds))


def held_batches(strategy, split, geometry: "Geometry"):
    """This worker's share of a split held in the object store (`HeldSplit`), as a distributed TF dataset
    of per-replica batches that every `evaluate` reads from its start."""
    images, labels = split.share(geometry.rank, geometry.world)
    return strategy.distribute_datasets_from_function(
        lambda _context: in_memory_batches(images, labels, geometry.per_replica_batch))


def finish(feeds: list) -> None:
    """End each feed's epoch: read what the consumer left, and wait for its thread."""
    for feed in feeds:
        feed.finish()


def quiet_device_datasets() -> None:
    """Give the per-device datasets of tf.distribute's MultiDeviceIterator the `epoch_options` too.

    MultiWorkerMirroredStrategy and MirroredStrategy feed their replicas
    through that iterator, which builds one more dataset per device with
    default options, so tf.data's autotuning join (`cluster/tf_datasets.py`) stalled
    each epoch's end there as well: 2 workers x 1 CPU ran at 0.63x of in-process
    tf.data after the fix of our own dataset. TensorFlow has no public option
    for those datasets; `_create_device_dataset` is pinned by
    tests/test_input_path.py.
    """
    if getattr(multi_device_iterator_ops._create_device_dataset, "quiet", False):
        return
    create = multi_device_iterator_ops._create_device_dataset

    @functools.wraps(create)
    def create_quiet(*args, **kwargs):
        return create(*args, **kwargs).with_options(epoch_options())

    create_quiet.quiet = True
    multi_device_iterator_ops._create_device_dataset = create_quiet


@dataclass(frozen=True)
class Geometry:
    """How the global batch and the rows divide between workers and replicas."""

    rank: int
    world: int
    replicas: int
    per_replica_batch: int
    steps_per_epoch: int
    validation_steps: int

    @classmethod
    def of(cls, strategy, global_batch_size: int, train_rows: int, validation_rows: int) -> "Geometry":
        context = ray.train.get_context()
        world, replicas = context.get_world_size(), strategy.num_replicas_in_sync
        per_replica, per_worker = batch_split(global_batch_size, world, replicas)
        # Ray Data splits rows equally between workers, so every worker runs the
        # same number of steps (the collectives would hang otherwise).
        return cls(rank=context.get_world_rank(), world=world, replicas=replicas, per_replica_batch=per_replica,
                   steps_per_epoch=epoch_steps(train_rows, world, replicas, global_batch_size),
                   validation_steps=-(-(validation_rows // world) // per_worker))

    @property
    def samples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.per_replica_batch * self.replicas


def dataset_shard(config: dict, name: str, rank: int):
    """Worker `rank`'s share of dataset `name`: its split from Ray Train, or, given its own datasets (a lone
    worker's whole, or its share of held rows: `trainer.run_training`), an iterator of its own, executed
    in this process."""
    own = config.get("datasets")
    return ray.train.get_dataset_shard(name) if own is None else own[rank][name].iterator()


def run_epochs(strategy, model: keras.Model, optimizer, geometry: Geometry, train, config: dict, meta: dict,
               callbacks=(), start_epoch: int = 0, history: list | None = None) -> list:
    """The epoch loop: stream, fit, validate, report; rank 0's report carries the checkpoint.
    Returns every epoch's metrics (the resumed ones included)."""
    history = list(history or [])
    train_shard = dataset_shard(config, "train", geometry.rank)
    held = config.get("held_validation")
    held_validation = held_batches(strategy, held, geometry) if held and geometry.validation_steps else None
    validation_shard = dataset_shard(config, "validation", geometry.rank) if held is None else None
    image_shape = tuple(config["image_shape"])
    own_streams = config.get("datasets") is not None

    def open_epoch(epoch: int) -> tuple[object, list]:
        """Epoch `epoch`'s train data, streaming from now on, and its feeds."""
        # Every worker has read the previous epoch to its end before the clock moves: the augmentation
        # stage reads the clock, so a worker still reading that epoch would get this one's draws.
        ray.train.collective.barrier()
        if geometry.rank == 0:
            ray.get(config["run_log"].set.remote(epoch))
        if own_streams and geometry.world > 1:
            # Ray Train's split starts an epoch's execution only after every worker asks for it; a worker's
            # own stream starts when it asks, so it waits until the clock has moved.
            ray.train.collective.barrier()
        feeds = []
        return distributed(strategy, train_shard, image_shape, geometry.per_replica_batch, drop_last=True,
                           shuffle_seed=train.seed * 100_003 + epoch * 101 + geometry.rank, feeds=feeds), feeds

    upcoming = open_epoch(start_epoch) if start_epoch < train.epochs else None
    for epoch in range(start_epoch, train.epochs):
        if geometry.rank == 0:
            ray.get(config["run_log"].begin.remote(epoch))
        started = time.perf_counter()
        train_data, feeds = upcoming
        fit = model.fit(train_data, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=geometry.steps_per_epoch,
                        callbacks=list(callbacks), verbose=0)
        train_seconds = time.perf_counter() - started
        finish(feeds)  # what Keras left of the epoch (its last partial batches)
        # The next epoch streams while this one validates and checkpoints.
        upcoming = open_epoch(epoch + 1) if epoch + 1 < train.epochs else None
        validation = {}
        if geometry.validation_steps:
            feeds = []
            validation_data = held_validation if held_validation is not None else distributed(
                strategy, validation_shard, image_shape, geometry.per_replica_batch, drop_last=False,
                shuffle_seed=None, feeds=feeds)
            scores = model.evaluate(validation_data, steps=geometry.validation_steps, verbose=0, return_dict=True)
            finish(feeds)
            validation = {"val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"])}
        metrics = {
            "epoch": epoch + 1,
            "loss": float(fit.history["loss"][-1]),
            "accuracy": float(fit.history["accuracy"][-1]),
            **validation,
            "learning_rate": float(keras.backend.get_value(optimizer.learning_rate)),
            "epoch_seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
            "samples_per_second": geometry.samples_per_epoch / train_seconds,
            "samples_seen": geometry.samples_per_epoch * (epoch + 1),
            "workers": geometry.world,
            "replicas": geometry.replicas,
            **record_usage(config["run_log"], geometry.rank),
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory() as directory:
            # Every worker writes (the save may run collectives); only rank 0's copy is kept.
            checkpoints.save(directory, model, optimizer, {**meta, "epoch": epoch + 1, "history": history})
            checkpoint = ray.train.Checkpoint.from_directory(directory) if geometry.rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)
    if start_epoch >= train.epochs:
        # A resumed run that was already complete still reports, so Result has metrics.
        ray.train.report(history[-1] if history else {"epoch": start_epoch})
    return history


def execution_steps(train: TrainSpec, callbacks) -> int:
    """Steps per `fit` call into TensorFlow: the recipe's, or 1 with callbacks, which Keras calls once per
    call, not per step (pruning's `UpdatePruningStep` would advance its schedule that many times slower)."""
    return 1 if callbacks else train.steps_per_execution


def resume_state(model: keras.Model, optimizer, run_folder: str, task: dict | None = None) -> tuple[int, list]:
    """(start epoch, history) from this run's newest complete checkpoint of `task`, or (0, []).

    The run folder is read, not only Ray Train's latest checkpoint: Ray Train
    registers a checkpoint once its controller hears of it, and a worker killed
    between writing epoch N's checkpoint and that moment would otherwise resume
    from epoch N-1 and repeat a finished epoch. A checkpoint whose files do not
    match its meta.json (cut off mid-write) is passed over, and so is one of
    another task (a fine-tuning run fits several steps, each its own task).
    """
    storage = RunStorage(run_folder)
    found = [ray.train.Checkpoint(storage.path(name))
             for name in reversed(storage.names("")) if name.startswith("checkpoint_")]
    registered = ray.train.get_checkpoint()
    for checkpoint in found + ([registered] if registered is not None else []):
        # Build the optimizer's slots first so their state restores now, not lazily.
        optimizer.build(model.trainable_variables)
        try:
            with checkpoint.as_directory() as directory:
                meta = checkpoints.read_meta(directory)
                if meta.get("task") != task:
                    continue
                checkpoints.load_state(directory, model, optimizer)
        except checkpoints.CheckpointError:
            continue
        return meta["epoch"], meta["history"]
    return 0, []


def train_model(config: dict) -> None:
    """Train the spec's model. `config`: the TrainJob dump, split sizes, and the run's log (epoch clock, usage)."""
    spec = TrainJob.model_validate(config["spec"])
    configure_devices(spec.scaling.cpus_per_worker)
    strategy = make_strategy()
    geometry = Geometry.of(strategy, spec.train.global_batch_size, config["train_rows"], config["validation_rows"])
    keras.utils.set_random_seed(spec.train.seed)

    shape = ModelShape(tuple(spec.data.image_shape), spec.data.num_classes)
    with strategy.scope():
        model = build_model(spec.model.family, shape, spec.model.width, spec.model.depth, spec.model.dropout,
                            spec.model.head_units)
        optimizer = build_optimizer(spec.train, geometry.steps_per_epoch)
        compile_classifier(model, optimizer, spec.data.num_classes, spec.train.label_smoothing,
                           spec.train.steps_per_execution)
    start_epoch, history = resume_state(model, optimizer, config["run_folder"])
    if start_epoch == 0 and spec.train.init_from:
        checkpoints.load_initial_weights(spec.train.init_from, model, trust_code=spec.trust_model_code)
    run_epochs(strategy, model, optimizer, geometry, spec.train, config, {"spec": config["spec"]},
               start_epoch=start_epoch, history=history)


def fit_variants(config: dict) -> None:
    """Fit every fine-tuned step of every planned variant, in turn, in this one worker group.

    `config`: `plans` (`VariantPlan` dumps), `input_models` (each plan's name to
    the local .keras path its steps start from, which every worker can read), `records` (the storage folder of the steps' fitted
    weights), `scaling`, the split sizes, `num_classes` and the run's log handle.
    A step whose weights are stored (an earlier attempt fitted it) is restored,
    not fitted again; the step in progress resumes from its last epoch's checkpoint.
    """
    scaling = ScalingSpec.model_validate(config["scaling"])
    configure_devices(scaling.cpus_per_worker)
    strategy = make_strategy()
    records = RunStorage(config["records"])

    for plan in map(VariantPlan.load, config["plans"]):
        def fit(index: int, step, prepared) -> list:
            train, folder, task = plan.recipes[index], plan.record(index), plan.task(index)
            stored = restore_record(records, plan, index, prepared.model)
            if stored is not None:
                return stored
            geometry = Geometry.of(strategy, train.global_batch_size, config["train_rows"],
                                   config["validation_rows"])
            optimizer = build_optimizer(train, geometry.steps_per_epoch)
            compile_classifier(prepared.model, optimizer, config["num_classes"], train.label_smoothing,
                               execution_steps(train, prepared.callbacks))
            start_epoch, history = resume_state(prepared.model, optimizer, config["run_folder"], task=task)
            history = run_epochs(strategy, prepared.model, optimizer, geometry, train, config, {"task": task},
                                 callbacks=prepared.callbacks, start_epoch=start_epoch, history=history)
            with tempfile.TemporaryDirectory() as directory:
                # Every worker writes (the save may run collectives); rank 0's copy is the record.
                checkpoints.save(directory, prepared.model, optimizer,
                                 {"task": task, "epoch": train.epochs, "history": history})
                if geometry.rank == 0:
                    records.upload(directory, folder)
            return history

        with strategy.scope(), tempfile.TemporaryDirectory() as scratch:
            walk(plan, config["input_models"][plan.name], scratch, fit, trust_code=config.get("trust_model_code", False))

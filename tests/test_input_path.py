"""How a Ray Train worker's Ray Data shard becomes Keras's input (`cluster.training.loop.shard_batches`).

The unit tests hand it a stand-in shard (only our shuffling, batching and
dropping are under test); the cluster test runs the real augmentation stage
through a real streaming split for many epochs, since ray-project/ray #62352
reports Ray's TF iterator deadlocking after many epochs from leaked threads.
"""

from __future__ import annotations

import inspect
import threading
import time

import numpy as np
import pytest
import ray

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from cluster.tf_datasets import in_memory_batches
from cluster.training import loop
from cluster.training.loop import PREFETCH_BATCHES, EpochFeed, shard_batches

ROWS, BATCH, SHAPE = 1000, 64, (4, 4, 1)
BLOCK_ROWS = 300  # not a multiple of BATCH: batches cut after the shuffle span blocks


class ListShard:
    """Ray's `DataIterator.iter_batches` over in-memory rows, in order; records the arguments it was given.
    `batch_size=None` gives the rows as blocks of `BLOCK_ROWS`, as Ray Data gives whole blocks."""

    def __init__(self, rows: int = ROWS):
        self.images = np.arange(rows, dtype=np.float32)[:, None, None, None] * np.ones(SHAPE, np.float32)
        self.labels = np.arange(rows, dtype=np.int64)
        self.calls = []

    def iter_batches(self, *, batch_size, batch_format, drop_last, prefetch_batches):
        self.calls.append({"batch_size": batch_size, "batch_format": batch_format, "drop_last": drop_last,
                           "prefetch_batches": prefetch_batches})
        batch_size = batch_size or BLOCK_ROWS
        stop = len(self.labels) - len(self.labels) % batch_size if drop_last else len(self.labels)
        for start in range(0, stop, batch_size):
            yield {"image": self.images[start:start + batch_size], "label": self.labels[start:start + batch_size],
                   "key": self.labels[start:start + batch_size].astype(np.uint64)}


def batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def test_training_batches_are_full_shuffled_and_keep_each_label_with_its_image():
    shard = ListShard()
    got = batches(shard_batches(shard, SHAPE, BATCH, drop_last=True, shuffle_seed=7))
    assert [len(labels) for _, labels in got] == [BATCH] * (ROWS // BATCH)
    labels = np.concatenate([labels for _, labels in got])
    assert len(set(labels.tolist())) == len(labels), "a row came twice"
    assert not np.array_equal(labels, np.sort(labels)), "the rows kept the shard's order"
    for images, labels in got:
        np.testing.assert_array_equal(images[:, 0, 0, 0], labels.astype(np.float32))
    # Ray Data hands over whole numpy blocks, fetched ahead; the shuffle and the batching happen after,
    # in tf.data, so every row but the last partial batch's is trained on.
    assert shard.calls == [{"batch_size": None, "batch_format": "numpy", "drop_last": False,
                            "prefetch_batches": PREFETCH_BATCHES}]


def test_the_same_seed_repeats_the_order_and_another_seed_changes_it():
    def order(seed):
        return np.concatenate([labels for _, labels in batches(
            shard_batches(ListShard(), SHAPE, BATCH, drop_last=True, shuffle_seed=seed))])

    np.testing.assert_array_equal(order(3), order(3))
    assert not np.array_equal(order(3), order(4))


def test_validation_batches_keep_every_row_in_order():
    shard = ListShard()
    got = batches(shard_batches(shard, SHAPE, BATCH, drop_last=False, shuffle_seed=None))
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in got]), np.arange(ROWS))
    assert len(got[-1][1]) == ROWS % BATCH
    assert shard.calls[0]["drop_last"] is False


def test_an_unshuffled_run_that_drops_the_last_batch_asks_ray_to_drop_it():
    shard = ListShard()
    got = batches(shard_batches(shard, SHAPE, BATCH, drop_last=True, shuffle_seed=None))
    assert shard.calls[0]["drop_last"] is True and len(got) == ROWS // BATCH


def test_a_feed_left_early_still_reads_its_epoch_to_the_end():
    read = []

    def source():
        for i in range(50):
            read.append(i)
            yield {"image": np.full((2, *SHAPE), i, np.float32), "label": np.array([i, i])}

    feed = EpochFeed(source())
    first = [int(labels[0]) for _, (_, labels) in zip(range(3), feed)]
    feed.finish()
    assert first == [0, 1, 2]
    # The rest of the epoch was read (and dropped), so Ray Data's iterator ends its epoch.
    assert read == list(range(50)) and not feed._thread.is_alive()


def test_a_failing_source_raises_in_the_consumer():
    def source():
        yield {"image": np.zeros((1, *SHAPE), np.float32), "label": np.zeros(1, np.int64)}
        raise RuntimeError("block lost")

    feed = EpochFeed(source())
    with pytest.raises(RuntimeError, match="block lost"):
        list(feed)
    feed.finish()


def test_finishing_a_feed_releases_a_consumer_still_waiting_on_it():
    """The loop ends an epoch's feed right after `fit`, while tf.data's prefetch thread may still wait
    on it for a batch; that wait must end (with the epoch), not last forever."""
    more = threading.Event()

    def source():
        yield {"image": np.zeros((1, *SHAPE), np.float32), "label": np.zeros(1, np.int64)}
        more.wait(timeout=10)  # Ray Data slow to hand over the next block
        yield {"image": np.ones((1, *SHAPE), np.float32), "label": np.ones(1, np.int64)}

    feed, got = EpochFeed(source()), []
    consumer = threading.Thread(target=lambda: got.extend(feed), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.2, more.set).start()
    feed.finish()
    consumer.join(timeout=10)
    assert not consumer.is_alive(), "the consumer still waits on a finished feed"
    assert [int(labels[0]) for _, labels in got] == [0]  # what was read after the end is dropped
    with pytest.raises(RuntimeError, match="one epoch"):
        list(feed)


def test_an_epoch_streams_from_its_datasets_construction_and_hands_back_its_feed():
    shard, feeds = ListShard(), []
    dataset = shard_batches(shard, SHAPE, BATCH, drop_last=False, shuffle_seed=None, feeds=feeds)
    # Ray Data was asked before the dataset's first use: the loop builds the next epoch's dataset
    # while it validates and checkpoints this one.
    assert len(shard.calls) == 1 and len(feeds) == 1
    assert np.concatenate([labels for _, labels in batches(dataset)]).tolist() == list(range(ROWS))
    loop.finish(feeds)


@pytest.mark.parametrize("shuffle_seed", [None, 3])
def test_each_epochs_dataset_runs_without_tf_datas_autotuning_thread(shuffle_seed):
    # Its join at the end of every epoch's iterator idled Ray's processes for seconds (cluster/tf_datasets.py: epoch_options).
    feeds = []
    dataset = shard_batches(ListShard(), SHAPE, BATCH, drop_last=True, shuffle_seed=shuffle_seed, feeds=feeds)
    assert dataset.options().autotune.enabled is False
    loop.finish(feeds)


def test_in_memory_test_batches_keep_every_row_in_order_without_it():
    images, labels = ListShard().images, ListShard().labels
    dataset = in_memory_batches(images, labels, BATCH)
    assert dataset.options().autotune.enabled is False
    assert np.concatenate([batch_labels for _, batch_labels in batches(dataset)]).tolist() == list(range(ROWS))


def test_the_strategies_per_device_datasets_run_without_it_too():
    # MultiWorkerMirroredStrategy's iterator builds a dataset per device through this private function.
    from tensorflow.python.data.ops import multi_device_iterator_ops

    assert list(inspect.signature(multi_device_iterator_ops._create_device_dataset).parameters) == [
        "prototype_ds", "incarnation_id", "prefetch_buffer_size", "experimental_slack"]
    loop.quiet_device_datasets()
    loop.quiet_device_datasets()  # a second call must not wrap it twice
    iterator = multi_device_iterator_ops.OwnedMultiDeviceIterator(
        shard_batches(ListShard(), SHAPE, BATCH, drop_last=False, shuffle_seed=None), ["/cpu:0"])
    (device_iterator,) = iterator._device_iterators
    assert device_iterator._dataset.options().autotune.enabled is False
    # One element per device: a list of one (images, labels) pair here.
    assert np.concatenate([labels.numpy() for ((_, labels),) in iterator]).tolist() == list(range(ROWS))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("split", [True, False], ids=["split shard", "lone worker's own iterator"])
def test_many_epochs_of_the_real_stage_neither_hang_nor_leak_threads(ray_client, split):
    """Each worker's shard when the workers are several; a lone worker's dataset iterated in its own process
    (`loop.dataset_shard`), its executor started there every epoch."""
    from cluster.data.pipeline import run_inputs
    from tests.conftest import sample_pipeline

    ray = ray_client
    data, prepared, clock = sample_pipeline(train_fraction=0.05)
    train = run_inputs(prepared, data, [{"op": "flip_left_right", "p": 0.5}], seed=0, clock=clock).train
    (shard,) = train.streaming_split(1, equal=True) if split else (
        loop.dataset_shard({"datasets": [{"train": train}]}, "train", rank=0),)
    rows, threads, feeds = prepared.plan.train_rows, [], []

    def open_epoch(epoch: int):
        ray.get(clock.set.remote(epoch))
        return shard_batches(shard, (28, 28, 1), 32, drop_last=True, shuffle_seed=epoch, feeds=feeds)

    # As the loop runs them: each epoch's stream starts once the previous one is finished, before it is
    # used; odd epochs stop early, as Keras does at `steps_per_epoch`, and the feed reads the rest.
    upcoming = open_epoch(0)
    for epoch in range(30):
        if epoch % 2:
            for taken, _ in enumerate(upcoming, start=1):
                if taken == 2:
                    break
        else:
            got = batches(upcoming)
            assert [len(labels) for _, labels in got] == [32] * (rows // 32), epoch
        loop.finish(feeds)
        feeds.clear()
        upcoming = open_epoch(epoch + 1) if epoch < 29 else None
        threads.append(threading.active_count())
    # Threads started for an epoch end with it: the count settles instead of growing with the epochs.
    assert threads[-1] <= threads[4] + 2, threads


def test_equal_shares_are_disjoint_random_draws_of_the_rows_the_same_for_a_seed():
    from cluster.data.pipeline import equal_shares

    rows = {"image": np.arange(103)[:, None] * np.ones((1, 4)), "label": np.arange(103), "key": np.arange(103) * 7}
    shares = equal_shares(rows, 3, seed=5)
    assert [len(share["label"]) for share in shares] == [34, 34, 34]  # 103 % 3 = 1 row left out
    labels = np.concatenate([share["label"] for share in shares])
    assert len(set(labels.tolist())) == 102 and set(labels.tolist()) <= set(range(103))
    for share in shares:  # each row's columns stay together
        assert (share["image"][:, 0] == share["label"]).all() and (share["key"] == share["label"] * 7).all()
    # Drawn at random, not cut in file order (a file sorted by class would give a worker few classes).
    assert sorted(shares[0]["label"].tolist()) != list(range(34))
    again = equal_shares(rows, 3, seed=5)
    assert all((a["label"] == b["label"]).all() for a, b in zip(shares, again))
    assert not (equal_shares(rows, 3, seed=6)[0]["label"] == shares[0]["label"]).all()


def test_each_worker_iterates_its_own_datasets_unless_ray_train_must_split_streams_from_the_files():
    from cluster.data.pipeline import HeldSplit, RunInputs

    class Stream(ray.data.Dataset):
        """A stand-in: only what it is counts here (`RunInputs` tells streams from held rows by type)."""

        def __init__(self):
            pass

        def __del__(self):
            pass

    held = HeldSplit(images=None, labels=None, rows=10)
    streams = [Stream() for _ in range(3)]
    shared = RunInputs(train=None, validation=held, shares=(streams[0], streams[1]))
    assert shared.per_worker(2) == [{"train": streams[0]}, {"train": streams[1]}]
    lone = RunInputs(train=streams[0], validation=streams[1])
    assert lone.per_worker(1) == [{"train": streams[0], "validation": streams[1]}]
    from_files = RunInputs(train=streams[0], validation=streams[1])
    assert from_files.per_worker(2) is None and from_files.streamed() == {"train": streams[0],
                                                                           "validation": streams[1]}
    assert RunInputs(train=streams[2], validation=held).streamed() == {"train": streams[2]}

"""tf.data pipelines that live for one pass: the options they all run with, and in-memory test batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def epoch_options() -> tf.data.Options:
    """Options for a dataset that lives one pass (an epoch, an evaluation): no autotuning model thread.

    A new iterator every pass means a new autotuning thread every pass, and
    the iterator's destructor joins it. TensorFlow's cancellation wakes that
    thread before it marks itself cancelled (`CancellationManager` runs the
    callbacks first), so the thread often sees "not cancelled" and sleeps to
    its next optimisation, whose period doubles from 10 ms: the join then ends
    near 10 ms x 2^k, up to a pass's length later (epochs of 5.1 s took 10.26 s;
    gdb: the main thread in `~RootDataset::Iterator`, the thread in
    `Model::OptimizeLoop`). The prefetch buffer still sizes itself without it.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def in_memory_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Arrays as one pass of batches for Keras `evaluate` (numpy given to Keras gets default options)."""
    return (tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE).with_options(epoch_options()))

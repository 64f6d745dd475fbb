"""Timing a float tf_keras model in this process: the child side of a Keras latency probe.

TensorFlow fixes its thread pools when it first runs an op, so this runs in
a fresh process (`latency.measure_latency_in_subprocess`) that sets them first.
"""

from __future__ import annotations

import tensorflow as tf

from cluster.evaluation.errors import MeasurementError
from cluster.evaluation.interpreter import DEFAULT_NUM_THREADS
from cluster.evaluation.latency import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MIN_SECONDS,
    DEFAULT_REPETITIONS,
    DEFAULT_THROUGHPUT_REPETITIONS,
    DEFAULT_WARMUP,
    LatencyResult,
    measure_calls,
    random_pixels,
)

# Inter-op threads run independent ops side by side; our models are chains,
# so one inter-op thread keeps the measured process at `num_threads` cores.
INTER_OP_THREADS = 1


def configure_tf_threads(num_threads: int) -> None:
    """Fix TensorFlow's thread pools, or check they already are as asked.

    Must run before TensorFlow executes its first op in this process; after
    that the pools are fixed and a different request raises MeasurementError.
    """
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
    except RuntimeError:
        current = (tf.config.threading.get_intra_op_parallelism_threads(),
                   tf.config.threading.get_inter_op_parallelism_threads())
        if current != (num_threads, INTER_OP_THREADS):
            raise MeasurementError(
                f"TensorFlow already runs with intra/inter-op threads {current}, not "
                f"({num_threads}, {INTER_OP_THREADS}); thread pools are fixed once TF runs an op. "
                "Measure in a fresh process: measure_latency_in_subprocess(...)") from None


def measure_keras_latency(model, num_threads: int = DEFAULT_NUM_THREADS, batch_sizes=DEFAULT_BATCH_SIZES,
                          repetitions: int = DEFAULT_REPETITIONS, warmup: int = DEFAULT_WARMUP,
                          throughput_repetitions: int = DEFAULT_THROUGHPUT_REPETITIONS,
                          min_seconds: float = DEFAULT_MIN_SECONDS) -> LatencyResult:
    """Time a float tf_keras model in this process (see `configure_tf_threads`)."""
    configure_tf_threads(num_threads)
    sample_shape = tuple(1 if d is None else d for d in model.input_shape[1:])
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def make_call(batch: int):
        pixels = tf.constant(random_pixels(sample_shape, batch))

        def call():
            infer(pixels).numpy()
        return call

    return measure_calls("keras", make_call, num_threads, batch_sizes, repetitions, warmup, throughput_repetitions,
                    min_seconds)

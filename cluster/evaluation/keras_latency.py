"""Timing a float tf_keras model in this process.

TensorFlow fixes its thread pools when it first runs an op, so a model is
timed here only in a process whose pools were set to the measured thread
count before that (a train job's driver sets them at its start, the probe's
child process at its); any other process times it in a fresh one
(`latency.measure_latency_in_subprocess`), which pays TensorFlow's import and
the model's load again (about 5 s on 2 cores).
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
    measure_latency_in_subprocess,
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


def runs_on_threads(num_threads: int) -> bool:
    """Whether this process's TensorFlow runs (or is now set to run) `num_threads` intra-op threads and one
    inter-op thread: set them if no op has run yet."""
    try:
        configure_tf_threads(num_threads)
    except MeasurementError:
        return False
    return True


def measure_keras_model(model, path, num_threads: int, batch_sizes, repetitions: int, min_seconds: float,
                        trust_code: bool = False) -> LatencyResult:
    """Time `model` (saved at `path`) in this process when its thread pools can be as asked, else in a fresh
    process that loads `path`."""
    if runs_on_threads(num_threads):
        return measure_keras_latency(model, num_threads=num_threads, batch_sizes=batch_sizes,
                                     repetitions=repetitions, min_seconds=min_seconds)
    return measure_latency_in_subprocess(path, num_threads=num_threads, batch_sizes=batch_sizes,
                                         repetitions=repetitions, min_seconds=min_seconds, trust_code=trust_code)

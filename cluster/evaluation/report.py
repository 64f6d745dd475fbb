"""Measuring one artifact into its record (`cluster.results.EvaluationRecord`).

Fields that were not measured are None (e.g. `flops` when no Keras model was
given for a .tflite file).

Units and conventions:

* `params`, `params_nonzero`, `flops`, `flops_sparse`: see `compute.py`
  (flops are multiply-accumulates per sample).
* `size_bytes` is the artifact on disk, `size_bytes_gzip` the same file
  gzipped at level 9.
* `latency_ms_*`: percentiles of batch-1 inference time, milliseconds.
* `throughput_sps`: samples per second keyed by batch size, as a string
  (JSON object keys are strings): {"32": 8100.0, "256": 9400.0}. The table
  shows the largest batch size, where throughput saturates.
* `num_threads`: inference threads used for accuracy, latency and memory.
* `peak_rss_bytes`: RSS high-water mark of a fresh process running the
  artifact; `peak_rss_baseline_bytes` the same process before loading it.
* `accuracy`: top-1 on the given test images, from the artifact itself.
"""

from __future__ import annotations

import os

import numpy as np

from cluster.evaluation.files import gzip_size_bytes, size_bytes
from cluster.evaluation.interpreter import DEFAULT_NUM_THREADS
from cluster.evaluation.latency import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MIN_SECONDS,
    DEFAULT_REPETITIONS,
    DEFAULT_THROUGHPUT_REPETITIONS,
    DEFAULT_WARMUP,
    measure_latency_in_subprocess,
    measure_tflite_latency,
)
from cluster.evaluation.memory import DEFAULT_BATCH_SIZE as MEMORY_BATCH_SIZE
from cluster.evaluation.memory import DEFAULT_NUM_SAMPLES as MEMORY_SAMPLES
from cluster.evaluation.memory import measure_peak_rss
from cluster.evaluation.tensors import weight_dtypes
from cluster.evaluation.tflite import TFLiteModel
from cluster.results import EvaluationRecord


def measure_artifact(tflite_path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *,
                     name: str | None = None, keras_model=None, num_threads: int = DEFAULT_NUM_THREADS,
                     batch_sizes=DEFAULT_BATCH_SIZES, repetitions: int = DEFAULT_REPETITIONS,
                     warmup: int = DEFAULT_WARMUP,
                     throughput_repetitions: int = DEFAULT_THROUGHPUT_REPETITIONS,
                     min_seconds: float = DEFAULT_MIN_SECONDS, latency_in_subprocess: bool = False,
                     measure_memory: bool = True,
                     memory_samples: int = MEMORY_SAMPLES, extra: dict | None = None) -> EvaluationRecord:
    """The full record of a .tflite file on test `images` / `labels`.

    `keras_model` (the model the file was exported from, wrappers stripped)
    supplies params and FLOPs, which the flatbuffer does not state. Latency
    runs in this process unless `latency_in_subprocess` (use it when other
    work shares the process); memory always runs in a fresh process, on the
    first `memory_samples` test images.
    """
    path = os.fspath(tflite_path)
    record = EvaluationRecord(name=name or os.path.splitext(os.path.basename(path))[0], artifact=path,
                              num_threads=num_threads, extra=dict(extra or {}))
    record.size_bytes = size_bytes(path)
    record.size_bytes_gzip = gzip_size_bytes(path)
    record.weight_dtypes = weight_dtypes(path)

    record.accuracy = TFLiteModel(path, num_threads=num_threads).accuracy(images, labels)
    record.num_test_samples = int(len(images))

    if keras_model is not None:
        # Deferred: counting a Keras model needs TensorFlow, and a TFLite file alone is measured without it
        # (an evaluate job's measuring task, the probes).
        from cluster.evaluation.compute import compute_profile

        profile = compute_profile(keras_model)
        record.params, record.params_nonzero = profile.params, profile.params_nonzero
        record.flops, record.flops_sparse = profile.flops, profile.flops_sparse

    options = dict(num_threads=num_threads, batch_sizes=batch_sizes, repetitions=repetitions,
                   warmup=warmup, throughput_repetitions=throughput_repetitions, min_seconds=min_seconds)
    measure = measure_latency_in_subprocess if latency_in_subprocess else measure_tflite_latency
    latency = measure(path, **options)
    record.latency_ms_p50 = latency.latency_ms_p50
    record.latency_ms_p95 = latency.latency_ms_p95
    record.latency_ms_p99 = latency.latency_ms_p99
    record.throughput_sps = {str(b): v for b, v in latency.throughput_sps.items()}
    record.batch_sizes = list(latency.batch_sizes)
    record.repetitions = latency.repetitions

    if measure_memory:
        memory = measure_peak_rss(path, images=images[:memory_samples], batch_size=MEMORY_BATCH_SIZE,
                                  num_threads=num_threads)
        record.peak_rss_bytes = memory.peak_rss_bytes
        record.peak_rss_baseline_bytes = memory.baseline_rss_bytes
    return record

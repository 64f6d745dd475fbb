"""Inference speed: batch-1 latency percentiles and batched throughput.

What is timed: one call of the engine on an input that is already in the
engine's format (for TFLite, `set_tensor` + `invoke` + `get_tensor` on a
pre-quantized batch; for Keras, `model(x, training=False)` inside a
`tf.function` plus copying the result out). Data loading and the
pixel-to-int8 conversion are not. Inputs are random pixels: speed of these
models does not depend on the values.

Thread counts are fixed and recorded:

* TFLite takes `num_threads` per interpreter, so it can be measured in any
  process.
* TensorFlow fixes its thread pools when it first runs an op and cannot change
  them afterwards, so `keras_latency` times a Keras model in a process whose
  pools were set to the measured count before that, or else in a fresh
  process: `measure_latency_in_subprocess` starts one; it works the same from
  a driver, a job or inside a Ray task.

TFLite files run in LiteRT, so this module and a process timing a .tflite
file never import TensorFlow.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np


from cluster.evaluation.errors import ArtifactError
from cluster.evaluation.interpreter import DEFAULT_NUM_THREADS
from cluster.evaluation.probe import run_probe
from cluster.evaluation.tflite import TFLiteModel

DEFAULT_BATCH_SIZES = (32, 256)
DEFAULT_REPETITIONS = 500  # at least this many timed batch-1 calls: a stable p99
DEFAULT_WARMUP = 20  # untimed calls first: allocation, caches, tracing
DEFAULT_THROUGHPUT_REPETITIONS = 20  # at least this many timed calls per batch size
# ...and keep timing each phase for at least this long, so a tiny model is not
# judged on a few milliseconds of samples. A model takes a few seconds in all.
DEFAULT_MIN_SECONDS = 1.0


@dataclass(frozen=True)
class LatencyResult:
    """Latency at batch 1 and throughput per batch size of one artifact."""

    backend: str  # 'tflite' or 'keras'
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_mean: float
    throughput_sps: dict[int, float]  # samples per second, by batch size
    num_threads: int
    batch_sizes: tuple[int, ...]
    repetitions: int  # timed batch-1 calls made
    throughput_calls: dict[int, int]  # timed calls made, by batch size
    warmup: int
    min_seconds: float

    def to_dict(self) -> dict:
        """JSON-ready: batch sizes become string keys, as JSON requires."""
        data = asdict(self)
        for key in ("throughput_sps", "throughput_calls"):
            data[key] = {str(b): v for b, v in data[key].items()}
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyResult":
        data = dict(data)
        data["throughput_sps"] = {int(b): float(v) for b, v in data["throughput_sps"].items()}
        data["throughput_calls"] = {int(b): int(v) for b, v in data["throughput_calls"].items()}
        data["batch_sizes"] = tuple(int(b) for b in data["batch_sizes"])
        return cls(**data)


def percentiles_ms(seconds: list[float]) -> tuple[float, float, float, float]:
    """p50, p95, p99 and mean, in milliseconds, of per-call times in seconds."""
    if not seconds:
        raise ValueError("no timings")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(ms.mean())


def time_calls(call, repetitions: int, warmup: int, min_seconds: float = 0.0) -> list[float]:
    """Seconds per call of `call()`, after `warmup` untimed calls.

    Times at least `repetitions` calls, and more until `min_seconds` passed.
    """
    for _ in range(warmup):
        call()
    timings = []
    started = time.perf_counter()
    while len(timings) < repetitions or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def random_pixels(sample_shape: tuple[int, ...], batch: int, seed: int = 0) -> np.ndarray:
    """A float32 batch of pixels in [0, 255], what the models are fed."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, *sample_shape)).astype(np.float32)


def measure_calls(backend: str, make_call, num_threads: int, batch_sizes, repetitions: int, warmup: int,
             throughput_repetitions: int, min_seconds: float) -> LatencyResult:
    """The protocol both runtimes share: `make_call(batch)` returns a zero-argument timed call."""
    if repetitions < 1 or throughput_repetitions < 1 or warmup < 0 or min_seconds < 0:
        raise ValueError("repetitions must be >= 1, warmup and min_seconds >= 0")
    batch_sizes = tuple(int(b) for b in batch_sizes)
    single = time_calls(make_call(1), repetitions, warmup, min_seconds)
    p50, p95, p99, mean = percentiles_ms(single)
    throughput, calls = {}, {}
    for batch in batch_sizes:
        # Fewer warm-up calls: a big batch already warms caches on its first call.
        timings = time_calls(make_call(batch), throughput_repetitions, max(1, warmup // 10), min_seconds)
        throughput[batch] = batch * len(timings) / sum(timings)
        calls[batch] = len(timings)
    return LatencyResult(backend, p50, p95, p99, mean, throughput, num_threads, batch_sizes,
                         len(single), calls, warmup, min_seconds)


def measure_tflite_latency(path: str | os.PathLike, num_threads: int = DEFAULT_NUM_THREADS,
                           batch_sizes=DEFAULT_BATCH_SIZES, repetitions: int = DEFAULT_REPETITIONS,
                           warmup: int = DEFAULT_WARMUP,
                           throughput_repetitions: int = DEFAULT_THROUGHPUT_REPETITIONS,
                           min_seconds: float = DEFAULT_MIN_SECONDS) -> LatencyResult:
    """Time a .tflite file in LiteRT with `num_threads` threads."""
    runner = TFLiteModel(path, num_threads=num_threads)
    interpreter = runner.interpreter
    sample_shape = tuple(1 if d is None else d for d in runner.sample_shape)

    def make_call(batch: int):
        pixels = runner.check_input(random_pixels(sample_shape, batch))
        runner.run_batch(pixels)  # resizes and allocates for this batch size
        feed = runner.quantize_input(pixels)
        input_index, output_index = runner.input_index, runner.output_index

        def call():
            interpreter.set_tensor(input_index, feed)
            interpreter.invoke()
            interpreter.get_tensor(output_index)
        return call

    return measure_calls("tflite", make_call, num_threads, batch_sizes, repetitions, warmup, throughput_repetitions,
                    min_seconds)


def measure_latency_in_subprocess(path: str | os.PathLike, num_threads: int = DEFAULT_NUM_THREADS,
                                  batch_sizes=DEFAULT_BATCH_SIZES, repetitions: int = DEFAULT_REPETITIONS,
                                  warmup: int = DEFAULT_WARMUP,
                                  throughput_repetitions: int = DEFAULT_THROUGHPUT_REPETITIONS,
                                  min_seconds: float = DEFAULT_MIN_SECONDS, timeout: float = 600.0,
                                  trust_code: bool = False) -> LatencyResult:
    """Measure a .tflite file or a saved Keras model in a fresh Python process.

    The child sets its thread count before TensorFlow runs anything, so the
    result's `num_threads` holds whatever this process has done.
    """
    if not os.path.exists(path):
        raise ArtifactError(path, "artifact not found")
    args = ["latency", os.fspath(path), "--threads", str(num_threads),
            "--batch-sizes", *[str(b) for b in batch_sizes], "--repetitions", str(repetitions),
            "--warmup", str(warmup), "--throughput-repetitions", str(throughput_repetitions),
            "--min-seconds", str(min_seconds)] + (["--trust-model-code"] if trust_code else [])
    return LatencyResult.from_dict(run_probe(args, timeout=timeout))

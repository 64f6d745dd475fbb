"""One record per model variant, how to measure it, and a Markdown table of them.

The record is flat and JSON-serializable so sweeps can write one JSON line per
variant and any job can read them back. Fields that were not measured are
None (e.g. `flops` when no Keras model was given for a .tflite file).

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

import json
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from cluster.evaluation import compute
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
from cluster.evaluation.tflite import TFLiteModel
from cluster.evaluation.tensors import weight_dtypes

SCHEMA_VERSION = 1


@dataclass
class EvaluationRecord:
    """Everything measured about one model or variant."""

    name: str
    artifact: str | None = None
    params: int | None = None
    params_nonzero: int | None = None
    flops: int | None = None
    flops_sparse: int | None = None
    size_bytes: int | None = None
    size_bytes_gzip: int | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    throughput_sps: dict[str, float] = field(default_factory=dict)
    num_threads: int | None = None
    peak_rss_bytes: int | None = None
    peak_rss_baseline_bytes: int | None = None
    accuracy: float | None = None
    num_test_samples: int | None = None
    batch_sizes: list[int] = field(default_factory=list)
    repetitions: int | None = None
    weight_dtypes: dict[str, int] = field(default_factory=dict)
    # Whatever the producing job wants to keep with it (recipe, width, ...).
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationRecord":
        """Read a record back; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown record fields: {sorted(unknown)}")
        return cls(**data)

    @property
    def max_batch_throughput(self) -> tuple[int, float] | None:
        """(batch size, samples/s) at the largest measured batch size."""
        if not self.throughput_sps:
            return None
        batch = max(self.throughput_sps, key=int)
        return int(batch), self.throughput_sps[batch]


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
    record.size_bytes = compute.size_bytes(path)
    record.size_bytes_gzip = compute.gzip_size_bytes(path)
    record.weight_dtypes = weight_dtypes(path)

    record.accuracy = TFLiteModel(path, num_threads=num_threads).accuracy(images, labels)
    record.num_test_samples = int(len(images))

    if keras_model is not None:
        profile = compute.compute_profile(keras_model)
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


# Markdown -----------------------------------------------------------------


def _number(value) -> str:
    return "-" if value is None else f"{value:,}"


def _float(digits: int):
    return lambda value: "-" if value is None else f"{value:.{digits}f}"


def _kib(value) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _throughput(record: EvaluationRecord) -> str:
    best = record.max_batch_throughput
    return "-" if best is None else f"{best[1]:,.0f} @{best[0]}"


# (header, how to render one record)
COLUMNS = (
    ("name", lambda r: r.name),
    ("accuracy", lambda r: _float(4)(r.accuracy)),
    ("params", lambda r: _number(r.params)),
    ("nonzero params", lambda r: _number(r.params_nonzero)),
    ("MACs", lambda r: _number(r.flops)),
    ("sparse MACs", lambda r: _number(r.flops_sparse)),
    ("size KiB", lambda r: _kib(r.size_bytes)),
    ("gzip KiB", lambda r: _kib(r.size_bytes_gzip)),
    ("p50 ms", lambda r: _float(3)(r.latency_ms_p50)),
    ("p95 ms", lambda r: _float(3)(r.latency_ms_p95)),
    ("p99 ms", lambda r: _float(3)(r.latency_ms_p99)),
    ("samples/s @batch", _throughput),
    ("threads", lambda r: _number(r.num_threads)),
    ("peak RSS MiB", lambda r: _mib(r.peak_rss_bytes)),
)


def markdown_table(records: list[EvaluationRecord | dict]) -> str:
    """A GitHub-flavoured Markdown table, one row per record, in the given order."""
    records = [r if isinstance(r, EvaluationRecord) else EvaluationRecord.from_dict(r) for r in records]
    header = "| " + " | ".join(h for h, _ in COLUMNS) + " |"
    align = "|" + "|".join(":---" if h == "name" else "---:" for h, _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(str(render(r)).replace("|", "\\|") for _, render in COLUMNS) + " |"
            for r in records]
    return "\n".join([header, align, *rows]) + "\n"

"""The child side of `cluster.evaluation.probe`: measure one artifact in this fresh process.

    python -m cluster.evaluation.probe_child latency model.tflite --threads 1 --output out.json
    python -m cluster.evaluation.probe_child memory model.keras --images x.npy --output out.json

The result goes to `--output` as JSON (stdout carries the runtime's logs); an
ArtifactError exits with ARTIFACT_ERROR_EXIT and its reason in that file.

A .tflite file is measured in LiteRT alone: this process imports TensorFlow
only for a Keras artifact, so a TFLite file's peak RSS is that of the
runtime and the model, what a deployment pays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np

from cluster.evaluation import latency
from cluster.evaluation.errors import ArtifactError
from cluster.evaluation.probe import ARTIFACT_ERROR_EXIT
from cluster.evaluation.tflite import TFLiteModel


def peak_rss_bytes() -> int:
    """Largest resident set this process has had, in bytes.

    Linux: VmHWM, the high-water mark of this program's own memory. Not
    getrusage's ru_maxrss, which a forked child inherits from its parent and
    keeps across exec: under a TensorFlow job it would report the job's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux kilobytes


def is_tflite(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(".tflite")


def load_keras(path: str | os.PathLike, threads: int, trust_code: bool = False):
    """TensorFlow with `threads` threads, then the saved tf_keras model at `path` (or ArtifactError naming it)."""
    # Imported here on purpose: only a Keras artifact needs TensorFlow, and a
    # TFLite measurement must not carry it.
    from cluster.evaluation.keras_latency import configure_tf_threads
    from cluster.models import ModelFileError, load_keras_model

    configure_tf_threads(threads)  # before anything runs a TF op (loading a model does)
    try:
        return load_keras_model(path, trust_code=trust_code)
    except ModelFileError as error:
        raise ArtifactError(path, str(error)) from None


def _latency(ns: argparse.Namespace) -> dict:
    options = dict(num_threads=ns.threads, batch_sizes=ns.batch_sizes, repetitions=ns.repetitions,
                   warmup=ns.warmup, throughput_repetitions=ns.throughput_repetitions,
                   min_seconds=ns.min_seconds)
    options = {key: value for key, value in options.items() if value is not None}
    if is_tflite(ns.path):
        result = latency.measure_tflite_latency(ns.path, **options)
    else:
        from cluster.evaluation.keras_latency import measure_keras_latency  # TensorFlow: see load_keras

        result = measure_keras_latency(load_keras(ns.path, ns.threads, ns.trust_model_code), **options)
    return result.to_dict()


def _memory(ns: argparse.Namespace) -> dict:
    if is_tflite(ns.path):
        # Peak so far: Python, numpy and the LiteRT runtime, no model yet.
        baseline = peak_rss_bytes()
        model = TFLiteModel(ns.path, num_threads=ns.threads)
        sample_shape, predict = model.sample_shape, model.predict
        backend = "tflite"
    else:
        from cluster.evaluation.keras_latency import configure_tf_threads  # TensorFlow: see load_keras

        configure_tf_threads(ns.threads)
        baseline = peak_rss_bytes()  # TensorFlow imported, no model yet
        keras_model = load_keras(ns.path, ns.threads, ns.trust_model_code)
        sample_shape = keras_model.input_shape[1:]
        backend = "keras"

        def predict(x, batch_size):
            for start in range(0, len(x), batch_size):
                keras_model.predict_on_batch(x[start:start + batch_size])
    if ns.images:
        images = np.load(ns.images)
    else:
        images = latency.random_pixels(tuple(1 if d is None else d for d in sample_shape), ns.num_samples)
    predict(images, batch_size=ns.batch_size)
    return {"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline, "backend": backend,
            "num_samples": int(len(images)), "batch_size": ns.batch_size, "num_threads": ns.threads}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluster.evaluation.probe_child", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    for name in ("latency", "memory"):
        p = sub.add_parser(name)
        p.add_argument("path", help=".tflite file or saved Keras model")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--output", required=True, help="where to write the JSON result")
        p.add_argument("--trust-model-code", action="store_true",
                       help="load a Keras model whose code runs when loaded (the spec's trust_model_code)")
    lat = sub.choices["latency"]
    # Absent options take the defaults of cluster.evaluation.latency.
    lat.add_argument("--batch-sizes", type=int, nargs="+")
    lat.add_argument("--repetitions", type=int)
    lat.add_argument("--warmup", type=int)
    lat.add_argument("--throughput-repetitions", type=int)
    lat.add_argument("--min-seconds", type=float)
    mem = sub.choices["memory"]
    mem.add_argument("--images", help=".npy file of float pixels; random pixels when absent")
    mem.add_argument("--num-samples", type=int, default=256)
    mem.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    output = Path(ns.output)
    try:
        result = {"latency": _latency, "memory": _memory}[ns.probe](ns)
    except ArtifactError as exc:
        output.write_text(json.dumps({"error": str(exc), "reason": exc.reason}))
        print(exc, file=sys.stderr)
        return ARTIFACT_ERROR_EXIT
    output.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

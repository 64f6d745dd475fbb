"""Measurements that need a fresh process: `python -m cluster.evaluation.probe`.

Two things cannot be measured honestly in a long-lived job process:
TensorFlow's thread pools are fixed by whatever ran first, and peak RSS
includes everything the process ever held. So the parent calls `run_probe`,
which starts this module as a child process with the project on PYTHONPATH;
the child measures one artifact and writes its result as JSON to a file (not
stdout: TensorFlow logs there).

    python -m cluster.evaluation.probe latency model.tflite --threads 1 --output out.json
    python -m cluster.evaluation.probe memory model.keras --images x.npy --output out.json

An artifact is a .tflite file or a Keras zip model (.keras). An ArtifactError in the child comes back
as an ArtifactError in the parent; any other failure as MeasurementError with
the end of the child's stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cluster
from cluster.evaluation.errors import ArtifactError, MeasurementError

PROJECT_ROOT = Path(cluster.__file__).resolve().parent.parent
# Exit status of a child that failed on the artifact rather than on a bug.
ARTIFACT_ERROR_EXIT = 3
STDERR_LINES_KEPT = 20


def run_probe(args: list[str], timeout: float) -> dict:
    """Run `python -m cluster.evaluation.probe *args` and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="sweetspot-probe-") as tmp:
        output = Path(tmp) / "result.json"
        env = {**os.environ, **cluster.WORKER_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "cluster.evaluation.probe", *args, "--output", str(output)]
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise MeasurementError(f"probe {' '.join(args[:2])} timed out after {timeout:g} s") from exc
        result = json.loads(output.read_text()) if output.exists() else None
    if proc.returncode == ARTIFACT_ERROR_EXIT and result and "reason" in result:
        raise ArtifactError(args[1], result["reason"])
    if proc.returncode != 0 or result is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-STDERR_LINES_KEPT:])
        raise MeasurementError(f"probe {' '.join(args[:2])} exited with status {proc.returncode}:\n{tail}")
    return result


# Child side ---------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Largest resident set this process has had, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def is_tflite(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(".tflite")


def load_keras(path: str | os.PathLike):
    """A saved tf_keras model, or ArtifactError naming the file."""
    from cluster.models import ModelFileError, load_keras_model  # deferred: loads TensorFlow

    try:
        return load_keras_model(path)
    except ModelFileError as error:
        raise ArtifactError(path, str(error)) from None


def _latency(ns: argparse.Namespace) -> dict:
    from cluster.evaluation import latency

    # Before anything runs a TF op (loading a Keras model does).
    latency.configure_tf_threads(ns.threads)
    options = dict(num_threads=ns.threads, batch_sizes=ns.batch_sizes, repetitions=ns.repetitions,
                   warmup=ns.warmup, throughput_repetitions=ns.throughput_repetitions,
                   min_seconds=ns.min_seconds)
    options = {key: value for key, value in options.items() if value is not None}
    if is_tflite(ns.path):
        result = latency.measure_tflite_latency(ns.path, **options)
    else:
        result = latency.measure_keras_latency(load_keras(ns.path), **options)
    return result.to_dict()


def _memory(ns: argparse.Namespace) -> dict:
    import numpy as np

    from cluster.evaluation import latency

    latency.configure_tf_threads(ns.threads)
    # Peak so far: interpreter, TensorFlow and numpy imported, no model yet.
    baseline = peak_rss_bytes()
    if is_tflite(ns.path):
        from cluster.evaluation.tflite import TFLiteModel

        model = TFLiteModel(ns.path, num_threads=ns.threads)
        sample_shape, predict = model.sample_shape, model.predict
        backend = "tflite"
    else:
        keras_model = load_keras(ns.path)
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
    parser = argparse.ArgumentParser(prog="python -m cluster.evaluation.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    for name in ("latency", "memory"):
        p = sub.add_parser(name)
        p.add_argument("path", help=".tflite file or saved Keras model")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--output", required=True, help="where to write the JSON result")
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

"""Measurements that need a fresh process: this side starts it, `probe_child` measures.

Two things cannot be measured honestly in a long-lived job process:
TensorFlow's thread pools are fixed by whatever ran first, and peak RSS
includes everything the process ever held. So the parent calls `run_probe`,
which starts `cluster.evaluation.probe_child` with the project on PYTHONPATH;
the child measures one artifact and writes its result as JSON to a file (not
stdout: TensorFlow logs there).

    python -m cluster.evaluation.probe_child latency model.tflite --threads 1 --output out.json
    python -m cluster.evaluation.probe_child memory model.keras --images x.npy --output out.json

An artifact is a .tflite file or a Keras zip model (.keras). An ArtifactError in the child comes back
as an ArtifactError in the parent; any other failure as MeasurementError with
the end of the child's stderr.
"""

from __future__ import annotations

import json
import os
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
    """Run `python -m cluster.evaluation.probe_child *args` and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="sweetspot-probe-") as tmp:
        output = Path(tmp) / "result.json"
        env = {**os.environ, **cluster.WORKER_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "cluster.evaluation.probe_child", *args, "--output", str(output)]
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

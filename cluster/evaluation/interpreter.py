"""Opening .tflite files: read and verify the flatbuffer, make a LiteRT interpreter.

Shared by the runner (`tflite.py`) and the tensor inspection (`tensors.py`)
so both reject a missing or corrupt file the same way, naming it. Artifacts
run in LiteRT (`ai-edge-litert`), the runtime users deploy with, not in
TensorFlow's deprecated `tf.lite.Interpreter`: a process that measures a
.tflite file never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from ai_edge_litert.interpreter import Interpreter

from cluster.evaluation.errors import ArtifactError

# One thread unless asked otherwise: timings comparable across machines and
# across models measured side by side on a shared node.
DEFAULT_NUM_THREADS = 1

# A valid TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


def read_tflite(path: str | os.PathLike) -> bytes:
    """The file's bytes, after checking it exists and looks like TFLite."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(path, "TFLite file not found") from exc
    except OSError as exc:
        raise ArtifactError(path, f"cannot read TFLite file: {exc.strerror or exc}") from exc
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ArtifactError(path, "not a TFLite flatbuffer (missing 'TFL3' identifier)")
    return data


def open_interpreter(path: str | os.PathLike | None, data: bytes,
                     num_threads: int = DEFAULT_NUM_THREADS) -> Interpreter:
    """A LiteRT interpreter over `data` (XNNPACK on); its verifier rejects corrupt buffers."""
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    try:
        return Interpreter(model_content=data, num_threads=num_threads)
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(path, f"corrupt or unsupported TFLite model: {exc}") from exc

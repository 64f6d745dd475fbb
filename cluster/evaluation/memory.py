"""Peak memory of inference: the RSS high-water mark of a fresh process.

The artifact is loaded and run in a child process (`cluster.evaluation.probe
memory`), which reports its own `ru_maxrss`: a long-lived job's RSS would
include everything else it ever held. The child also reports its peak before
loading the model (`baseline_rss_bytes`: Python, numpy, TensorFlow and the
interpreter), so the model's own share is the difference.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cluster.evaluation.errors import ArtifactError
from cluster.evaluation.interpreter import DEFAULT_NUM_THREADS
from cluster.evaluation.probe import run_probe

DEFAULT_NUM_SAMPLES = 256  # random-pixel samples when no images are given
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of one inference process."""

    peak_rss_bytes: int
    baseline_rss_bytes: int  # peak before the model was loaded
    backend: str  # 'tflite' or 'keras'
    num_samples: int
    batch_size: int
    num_threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure_peak_rss(path: str | os.PathLike, images: np.ndarray | None = None,
                     num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
                     num_threads: int = DEFAULT_NUM_THREADS, timeout: float = 600.0,
                     trust_code: bool = False) -> MemoryResult:
    """Run inference of the artifact at `path` in a fresh process; its peak RSS.

    `images` (float pixels, N x H x W x C) are handed to the child through a
    temporary .npy file; without them it runs `num_samples` random pixels.
    """
    if not os.path.exists(path):
        raise ArtifactError(path, "artifact not found")
    args = ["memory", os.fspath(path), "--threads", str(num_threads), "--batch-size", str(batch_size),
            "--num-samples", str(num_samples)] + (["--trust-model-code"] if trust_code else [])
    with tempfile.TemporaryDirectory(prefix="sweetspot-memory-") as tmp:
        if images is not None:
            images_path = Path(tmp) / "images.npy"
            np.save(images_path, np.asarray(images, dtype=np.float32))
            args += ["--images", str(images_path)]
        return MemoryResult(**run_probe(args, timeout=timeout))

"""An artifact's file sizes: on disk, and gzipped as it would ship. No TensorFlow: a TFLite file is
measured without it."""

from __future__ import annotations

import gzip
import os
import shutil

from cluster.evaluation.errors import ArtifactError


def size_bytes(path: str | os.PathLike) -> int:
    """Size of the artifact file on disk."""
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise ArtifactError(path, f"cannot stat artifact: {exc.strerror or exc}") from exc


class _CountingSink:
    """A write-only file object that only counts bytes, so big files stream."""

    def __init__(self):
        self.count = 0

    def write(self, data) -> int:
        self.count += len(data)
        return len(data)

    def flush(self):
        pass


def gzip_size_bytes(path: str | os.PathLike, chunk_size: int = 1 << 20) -> int:
    """Size of the file gzipped at level 9: how well it would ship compressed.

    The stream is what Python's `gzip.compress(data, 9, mtime=0)` writes: no
    file name and a zero timestamp in the header, so the number is
    reproducible. It uses zlib's deflate; GNU `gzip -9 -n` uses its own
    deflate and lands within a fraction of a percent of it, not on the byte.
    """
    sink = _CountingSink()
    try:
        with open(path, "rb") as src, gzip.GzipFile(filename="", mode="wb", compresslevel=9,
                                                     fileobj=sink, mtime=0) as gz:
            shutil.copyfileobj(src, gz, chunk_size)
    except OSError as exc:
        raise ArtifactError(path, f"cannot read artifact: {exc.strerror or exc}") from exc
    return sink.count


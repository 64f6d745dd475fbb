"""Find the Parquet files a spec names, on local disk, S3, GCS or the Hugging Face hub."""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from cluster.data import DataError

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Source:
    """A split's files and the filesystem that reads them (picklable, so Ray tasks can use it)."""

    uri: str
    filesystem: pafs.FileSystem
    files: tuple[str, ...]

    def display(self, path: str) -> str:
        """The path as the user wrote it (with its scheme), for error messages."""
        scheme = self.uri.split("://", 1)[0] + "://" if "://" in self.uri else ""
        return f"{scheme}{path}" if scheme and not path.startswith(scheme) else path


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("hf://"):
        # The hub is reached through fsspec; pyarrow wraps it so Ray Data and
        # the checks read it like any other filesystem.
        try:
            from huggingface_hub import HfFileSystem
        except ImportError:
            raise DataError(f"{uri}: reading hf:// needs huggingface_hub (pip install 'sweetspot[cloud]')") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(HfFileSystem())), uri.removeprefix("hf://")
    if "://" in uri:
        # from_uri does not understand globs: open the part before the first one.
        cut = min([uri.index(c) for c in GLOB_CHARS if c in uri] + [len(uri)])
        try:
            filesystem, prefix = pafs.FileSystem.from_uri(uri[:cut])
        except (pa.ArrowInvalid, OSError, ValueError) as error:
            raise DataError(f"{uri}: cannot open this filesystem ({error})") from None
        return filesystem, prefix + uri[cut:]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def _list(filesystem: pafs.FileSystem, path: str) -> list[str]:
    """Expand a glob or a folder into Parquet files; a plain file is itself."""
    if any(c in path for c in GLOB_CHARS):
        if isinstance(filesystem, pafs.LocalFileSystem):
            return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        root = path[: min(path.index(c) for c in GLOB_CHARS if c in path)].rsplit("/", 1)[0]
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if info.type == pafs.FileType.File:
        return [path]
    return []


def resolve(uri: str, field: str) -> Source:
    """The files of one split; `field` (e.g. `data.train`) names the spec entry in errors."""
    filesystem, path = _filesystem(uri)
    try:
        files = _list(filesystem, path)
    except OSError as error:
        raise DataError(f"{field}: cannot list {uri!r}: {error}") from None
    if not files:
        raise DataError(f"{field}: no Parquet files found at {uri!r}")
    return Source(uri=uri, filesystem=filesystem, files=tuple(files))

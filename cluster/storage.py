"""A run's folder under the storage root, on local disk or s3:// / gs://.

Every file is written whole or not at all: locally to a temporary name then
renamed (atomic on POSIX), remotely as a single object upload. A reader never
sees a half-written `summary.json`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(ValueError):
    """The run folder cannot be used; the message names it."""


class StorageFull(OSError):
    """The storage ran out of space (or quota) while a file was written; the previous version is intact."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RunStorage:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        if "://" in self.uri:
            self.filesystem, self.root = pafs.FileSystem.from_uri(self.uri)
        else:
            self.filesystem, self.root = pafs.LocalFileSystem(), os.path.abspath(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, relative: str = "") -> str:
        """Where `relative` lives, as the user would write it (a local path or a URI)."""
        relative = relative.strip("/")
        if self.is_local:
            return os.path.join(self.root, relative) if relative else self.root
        return f"{self.uri}/{relative}" if relative else self.uri

    def _full(self, relative: str) -> str:
        return f"{self.root}/{relative.strip('/')}" if relative else self.root

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(self._full(relative)).type != pafs.FileType.NotFound

    def names(self, relative: str) -> list[str]:
        """The names in folder `relative` (empty when it does not exist)."""
        selector = pafs.FileSelector(self._full(relative), allow_not_found=True)
        return sorted(os.path.basename(info.path) for info in self.filesystem.get_file_info(selector))

    def read_text(self, relative: str) -> str:
        with self.filesystem.open_input_stream(self._full(relative)) as stream:
            return stream.read().decode()

    def write_bytes(self, relative: str, data: bytes) -> str:
        target = self._full(relative)
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, target)
            except BaseException as error:
                Path(temporary).unlink(missing_ok=True)
                if isinstance(error, OSError) and error.errno in NO_SPACE:
                    raise StorageFull(error.errno, f"{self.path(relative)}: no space left on the storage "
                                                   f"({error.strerror}); the file was not written and its "
                                                   "previous version, if any, is intact") from None
                raise
        else:
            with self.filesystem.open_output_stream(target) as stream:
                stream.write(data)
        return self.path(relative)

    def move_aside(self, suffix: str) -> str:
        """Rename the whole run folder to a sibling `<folder>.<suffix>`; returns where it went.

        The folder is left as it was when the storage cannot rename it (object stores
        rename file by file, not atomically): StorageError says so.
        """
        target = f"{self.root}.{suffix}"
        try:
            self.filesystem.move(self.root, target)
        except (OSError, NotImplementedError) as error:  # pyarrow raises NotImplementedError where a store cannot move
            raise StorageError(f"{self.path()}: cannot move the previous run aside ({error}); move or delete it, "
                               "then submit again") from None
        return f"{self.uri}.{suffix}" if not self.is_local else target

    def write_text(self, relative: str, text: str) -> str:
        return self.write_bytes(relative, text.encode())

    def upload(self, local_path: str | os.PathLike, relative: str) -> str:
        """Copy a local file, or a folder's files one by one, each written atomically."""
        local_path = Path(local_path)
        if local_path.is_dir():
            for file in sorted(p for p in local_path.rglob("*") if p.is_file()):
                self.write_bytes(f"{relative}/{file.relative_to(local_path).as_posix()}", file.read_bytes())
        else:
            self.write_bytes(relative, local_path.read_bytes())
        return self.path(relative)


def fetch_local(uri: str) -> str | None:
    """A local path holding the file at `uri` (downloaded to a temporary file if remote); None if absent."""
    if "://" not in uri:
        path = os.path.abspath(os.path.expanduser(uri))
        return path if os.path.isfile(path) else None
    filesystem, path = pafs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    suffix = os.path.splitext(path)[1]
    handle, local = tempfile.mkstemp(suffix=suffix, prefix="sweetspot-")
    with os.fdopen(handle, "wb") as file, filesystem.open_input_stream(path) as stream:
        file.write(stream.read())
    return local

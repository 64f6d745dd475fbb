"""Preflight: read every row of a split once, before any training, and stop on the first bad one.

Catches a missing column, a wrong label type, a null or out-of-range label, an
image that does not decode or has the wrong size, and an empty split, with an
error naming the spec field, the file and the row. What it learns (a key and
a label per row) plans the exact, class-balanced splits.

A split that passed is remembered for the life of the process (keyed by its
files' sizes and modification times), so the job runner's preflight and the
job itself read the data once. Asked to (`keep_pixels`), the check also keeps
each file's decoded rows, which the job then takes instead of decoding every
image a second time (`kept_files`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.data import DataError
from cluster.data.decode import RowError, decode_column, row_keys
from cluster.data.sources import Source
from cluster.data.splits import SplitPlan

BATCH_ROWS = 2048
CHECKED_SPLITS_KEPT = 8
_checked: dict[tuple, "SplitIndex"] = {}


@dataclass(frozen=True)
class DecodedFile:
    """One file's rows as its check decoded them: pixels (N, H, W, C), read-only, and int64 labels."""

    pixels: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class SplitIndex:
    """Per-row keys and labels of a checked split, and each file's decoded rows when they were kept."""

    keys: np.ndarray
    labels: np.ndarray
    files: tuple[DecodedFile, ...] | None = None

    @property
    def num_rows(self) -> int:
        return len(self.labels)


def _open(source: Source, path: str, field: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source.filesystem.open_input_file(path))
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{field}: {source.display(path)}: not a readable Parquet file ({error})") from None


def _check_schema(schema: pa.Schema, image_column: str, label_column: str, where: str) -> None:
    for column in (image_column, label_column):
        if column not in schema.names:
            option = "data.image_column" if column == image_column else "data.label_column"
            raise DataError(f"{where}: no column {column!r} ({option}); the file has {schema.names}")
    label_type = schema.field(label_column).type
    if not pa.types.is_integer(label_type):
        raise DataError(f"{where}: column {label_column!r} has type {label_type}, expected integer class ids")


def _check_labels(labels: pa.Array, num_classes: int, where: str, offset: int) -> np.ndarray:
    if labels.null_count:
        row = offset + int(np.flatnonzero(labels.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where} row {row}: label is null")
    values = labels.to_numpy().astype(np.int64)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{where} row {offset + row}: label {values[row]} is outside [0, {num_classes}) "
                        "(data.num_classes)")
    return values


def _version(source: Source) -> tuple:
    """What identifies the files' current contents: path, size and modification time of each."""
    try:
        infos = source.filesystem.get_file_info(list(source.files))
    except (OSError, pa.ArrowException):
        return (None,)  # never equal to a real listing: such a split is read again
    return tuple((i.path, i.size, i.mtime_ns) for i in infos)


def check_split(source: Source, image_column: str, label_column: str, num_classes: int,
                image_shape: tuple[int, int, int], field: str, keep_pixels: bool = False) -> SplitIndex:
    """Check every file and row of a split; `field` (e.g. `data.train`) prefixes every error.

    `keep_pixels`: also keep each file's decoded rows (`SplitIndex.files`), for a
    process that reads the whole split next (a job that caches its splits, evaluation).
    """
    key = (_version(source), image_column, label_column, num_classes, tuple(image_shape))
    index = _checked.get(key)
    if index is None or (keep_pixels and index.files is None):
        index = _read_split(source, image_column, label_column, num_classes, tuple(image_shape), field,
                            keep_pixels)
        _checked.pop(key, None)
        if len(_checked) >= CHECKED_SPLITS_KEPT:
            _checked.pop(next(iter(_checked)))
        _checked[key] = index
    return index


def kept_files(source: Source, image_column: str, label_column: str, num_classes: int,
               image_shape: tuple[int, int, int]) -> tuple[DecodedFile, ...] | None:
    """Each file's decoded rows, if this process checked the split with `keep_pixels` and its files are
    unchanged since; else None."""
    index = _checked.get((_version(source), image_column, label_column, num_classes, tuple(image_shape)))
    return None if index is None else index.files


def check_plan(plan: SplitPlan, labels: np.ndarray, validation_fraction: float) -> None:
    """Refuse fractions that leave the validation split, or a class present in the data, with no rows."""
    if validation_fraction > 0 and plan.validation_rows == 0:
        raise DataError(f"data.validation_fraction: {validation_fraction:g} of {len(labels)} train rows leaves "
                        "the validation split empty (less than one row of any class); raise it, or set 0 "
                        "to train without validation")
    present = np.bincount(labels, minlength=len(plan.train.counts)) > 0
    starved = [c for c in np.flatnonzero(present) if plan.train.counts[c] == 0]
    if starved:
        raise DataError(f"data.train_fraction: class(es) {[int(c) for c in starved]} of data.train keep no "
                        "training rows after validation_fraction and train_fraction; use more data or "
                        "larger fractions")


def _read_split(source: Source, image_column: str, label_column: str, num_classes: int,
                image_shape: tuple[int, int, int], field: str, keep_pixels: bool) -> SplitIndex:
    keys, labels, files = [], [], []
    for path in source.files:
        where = f"{field}: {source.display(path)}"
        parquet = _open(source, path, field)
        _check_schema(parquet.schema_arrow, image_column, label_column, where)
        offset, file_pixels, file_labels = 0, [], []
        try:
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=[image_column, label_column])
            for batch in batches:
                file_labels.append(_check_labels(batch.column(label_column), num_classes, where, offset))
                try:
                    pixels = decode_column(batch.column(image_column), image_shape)
                except RowError as error:
                    raise DataError(f"{where} row {offset + error.row}: {error.message}") from None
                keys.append(row_keys(pixels))
                if keep_pixels:
                    file_pixels.append(pixels)
                offset += batch.num_rows
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{where}: unreadable after row {offset} ({error})") from None
        labels.extend(file_labels)
        if keep_pixels:
            files.append(_decoded_file(file_pixels, file_labels, image_shape))
    if not labels or sum(len(x) for x in labels) == 0:
        raise DataError(f"{field}: the split is empty ({len(source.files)} file(s), 0 rows at {source.uri!r})")
    return SplitIndex(keys=np.concatenate(keys), labels=np.concatenate(labels),
                      files=tuple(files) if keep_pixels else None)


def _decoded_file(pixels: list[np.ndarray], labels: list[np.ndarray], image_shape: tuple) -> DecodedFile:
    """A file's batches joined; read-only, as every later reader of the split shares them."""
    joined = DecodedFile(pixels=np.concatenate(pixels) if pixels else np.zeros((0, *image_shape), np.uint8),
                         labels=np.concatenate(labels) if labels else np.zeros(0, np.int64))
    joined.pixels.flags.writeable = False
    joined.labels.flags.writeable = False
    return joined

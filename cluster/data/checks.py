"""Preflight: read every row of a split once, before any training, and stop on the first bad one.

Catches a missing column, a wrong label type, a null or out-of-range label, an
image that does not decode or has the wrong size, and an empty split, with an
error naming the spec field, the file and the row. What it learns (a key and
a label per row) plans the exact, class-balanced splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.data import DataError
from cluster.data.decode import RowError, decode_column, row_keys
from cluster.data.sources import Source

BATCH_ROWS = 2048


@dataclass(frozen=True)
class SplitIndex:
    """Per-row keys and labels of a checked split."""

    keys: np.ndarray
    labels: np.ndarray

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


def check_split(source: Source, image_column: str, label_column: str, num_classes: int,
                image_shape: tuple[int, int, int], field: str) -> SplitIndex:
    """Check every file and row of a split; `field` (e.g. `data.train`) prefixes every error."""
    keys, labels = [], []
    for path in source.files:
        where = f"{field}: {source.display(path)}"
        parquet = _open(source, path, field)
        _check_schema(parquet.schema_arrow, image_column, label_column, where)
        offset = 0
        try:
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=[image_column, label_column])
            for batch in batches:
                labels.append(_check_labels(batch.column(label_column), num_classes, where, offset))
                try:
                    pixels = decode_column(batch.column(image_column), image_shape)
                except RowError as error:
                    raise DataError(f"{where} row {offset + error.row}: {error.message}") from None
                keys.append(row_keys(pixels))
                offset += batch.num_rows
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{where}: unreadable after row {offset} ({error})") from None
    if not labels or sum(len(x) for x in labels) == 0:
        raise DataError(f"{field}: the split is empty ({len(source.files)} file(s), 0 rows at {source.uri!r})")
    return SplitIndex(keys=np.concatenate(keys), labels=np.concatenate(labels))

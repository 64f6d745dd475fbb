"""A job decodes each image once: its preflight check keeps the decoded rows, and the job reads them from there."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cluster.data import checks, pipeline
from cluster.spec import DataSpec
from tests.conftest import SAMPLE


@pytest.fixture
def decoded_rows(monkeypatch):
    """How many rows `decode_column` decodes from now on, in the checks and in the pipeline."""
    counter = {"rows": 0}
    real = pipeline.decode_column

    def counting(column, shape):
        counter["rows"] += len(column)
        return real(column, shape)

    monkeypatch.setattr(checks, "decode_column", counting)
    monkeypatch.setattr(pipeline, "decode_column", counting)
    return counter


def copied_sample(tmp_path, cache: bool) -> DataSpec:
    """The sample under a path of its own: no other test of this process has checked these files."""
    for name in ("train.parquet", "test.parquet"):
        shutil.copy(SAMPLE / name, tmp_path / name)
    return DataSpec(train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"), num_classes=10,
                    validation_fraction=0.1, train_fraction=0.5, cache=cache)


def test_a_caching_job_decodes_every_image_once_and_reads_the_same_rows(tmp_path, decoded_rows):
    data = copied_sample(tmp_path, cache=True)
    prepared = pipeline.prepare(data, seed=0)
    assert decoded_rows["rows"] == 7_000  # the check: 6,000 train and 1,000 test rows

    images, labels = pipeline.load_arrays(prepared.test_source, data)
    validation, _ = pipeline.validation_arrays(prepared, data)
    calibration = next(iter(pipeline.representative_images(prepared, data, 64)()))
    assert decoded_rows["rows"] == 7_000, "the job decoded rows its check had decoded already"

    # The same rows as a fresh read of the files gives.
    checks._checked.clear()
    fresh_images, fresh_labels = pipeline.load_arrays(prepared.test_source, data)
    np.testing.assert_array_equal(images, fresh_images)
    np.testing.assert_array_equal(labels, fresh_labels)
    assert images.dtype == np.float32 and len(validation) == 600 and calibration.shape == (32, 28, 28, 1)


def test_kept_rows_are_read_only_and_go_when_the_file_changes(tmp_path, decoded_rows):
    data = copied_sample(tmp_path, cache=True)
    prepared = pipeline.prepare(data, seed=0)
    (pixels, _), = pipeline.decoded_files(prepared.test_source, data)
    with pytest.raises(ValueError):
        pixels[0, 0, 0, 0] = 1
    # A file rewritten since its check is read again, not served from what the check kept.
    shutil.copy(SAMPLE / "train.parquet", tmp_path / "test.parquet")
    before = decoded_rows["rows"]
    assert sum(len(labels) for _, labels in pipeline.decoded_files(prepared.test_source, data)) == 6_000
    assert decoded_rows["rows"] == before + 6_000


def test_a_job_that_streams_its_train_split_keeps_only_the_test_rows(tmp_path, decoded_rows):
    data = copied_sample(tmp_path, cache=False)
    prepared = pipeline.prepare(data, seed=0)
    pipeline.load_arrays(prepared.test_source, data)
    assert decoded_rows["rows"] == 7_000
    pipeline.validation_arrays(prepared, data)
    assert decoded_rows["rows"] == 13_000  # the train split's pixels were not kept: read again

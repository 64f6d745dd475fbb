"""Bad data stops the job before training, with the spec field, the file and the row."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from cluster.data import DataError
from cluster.data.checks import check_split
from cluster.data.pipeline import load_arrays, prepare
from cluster.data.sources import resolve
from cluster.spec import DataSpec, validate_document
from jobs.runner import check_data
from tests.conftest import ROOT, SAMPLE, train_document

SHAPE = (28, 28, 1)


def sample_table(rows: int = 50) -> pa.Table:
    return pq.read_table(SAMPLE / "train.parquet").slice(0, rows)


def with_image(table: pa.Table, row: int, data: bytes | None) -> pa.Table:
    images = table.column("image").to_pylist()
    images[row] = None if data is None else {"bytes": data, "path": None}
    return table.set_column(table.schema.get_field_index("image"), "image",
                            pa.array(images, type=table.schema.field("image").type))


def png(shape) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def check(path, **overrides):
    options = dict(image_column="image", label_column="label", num_classes=10, image_shape=SHAPE)
    options.update(overrides)
    return check_split(resolve(str(path), "data.train"), field="data.train", **options)


def write(tmp_path, table, name="bad.parquet"):
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_the_bundled_sample_passes():
    index = check(SAMPLE / "train.parquet")
    assert index.num_rows == 6000
    assert np.bincount(index.labels).tolist() == [600] * 10


def test_missing_column_names_file_and_option(tmp_path):
    path = write(tmp_path, sample_table().drop_columns(["label"]))
    with pytest.raises(DataError, match=r"data\.train: .*bad\.parquet: no column 'label' \(data\.label_column\)"):
        check(path)


def test_wrong_label_dtype(tmp_path):
    table = sample_table()
    table = table.set_column(1, "label", pa.array([str(v) for v in table.column("label").to_pylist()]))
    with pytest.raises(DataError, match=r"bad\.parquet: column 'label' has type string, expected integer"):
        check(write(tmp_path, table))


def test_corrupt_image_bytes_name_the_row(tmp_path):
    path = write(tmp_path, with_image(sample_table(), 17, b"\x89PNG not really"))
    with pytest.raises(DataError, match=r"bad\.parquet row 17: image bytes do not decode"):
        check(path)


def test_null_image_names_the_row(tmp_path):
    with pytest.raises(DataError, match=r"row 3: image is null"):
        check(write(tmp_path, with_image(sample_table(), 3, None)))


def test_wrong_image_size_names_the_row(tmp_path):
    path = write(tmp_path, with_image(sample_table(), 21, png((32, 32))))
    with pytest.raises(DataError, match=r"row 21: image is 32 x 32 pixels, expected 28 x 28 \(data.image_shape\)"):
        check(path)


def test_label_outside_num_classes_names_the_row(tmp_path):
    table = sample_table()
    labels = table.column("label").to_pylist()
    labels[9] = 10
    table = table.set_column(1, "label", pa.array(labels, pa.int64()))
    with pytest.raises(DataError, match=r"row 9: label 10 is outside \[0, 10\) \(data\.num_classes\)"):
        check(write(tmp_path, table))


def test_row_numbers_count_across_batches(tmp_path):
    table = pq.read_table(SAMPLE / "train.parquet").slice(0, 3000)
    path = write(tmp_path, with_image(table, 2500, b"junk"))
    with pytest.raises(DataError, match=r"row 2500:"):
        check(path)


def test_empty_split(tmp_path):
    with pytest.raises(DataError, match=r"data\.train: the split is empty"):
        check(write(tmp_path, sample_table().slice(0, 0)))


def test_unreadable_path_and_not_parquet(tmp_path):
    with pytest.raises(DataError, match=r"data\.train: no Parquet files found"):
        check(tmp_path / "absent" / "*.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        check(junk)


def test_plain_numeric_columns_are_images_too(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 28 * 28), dtype=np.uint8)
    table = pa.table({"pixels": pa.array(list(pixels), type=pa.list_(pa.uint8())),
                      "y": pa.array(rng.integers(0, 10, 40), pa.int64())})
    path = write(tmp_path, table, "numeric.parquet")
    index = check(path, image_column="pixels", label_column="y")
    assert index.num_rows == 40
    spec = DataSpec(train=str(path), test=str(path), image_column="pixels", label_column="y", num_classes=10)
    images, labels = load_arrays(resolve(str(path), "data.test"), spec)
    np.testing.assert_array_equal(images.reshape(40, -1), pixels.astype(np.float32))
    short = pa.table({"pixels": pa.array([list(range(10))], type=pa.list_(pa.uint8())), "y": pa.array([1])})
    with pytest.raises(DataError, match=r"row 0: image has 10 values, expected 784"):
        check(write(tmp_path, short, "short.parquet"), image_column="pixels", label_column="y")


def test_prepare_checks_both_splits_and_names_the_test_field(tmp_path):
    bad = write(tmp_path, with_image(sample_table(), 4, b"junk"))
    spec = DataSpec(train=str(SAMPLE / "train.parquet"), test=str(bad), num_classes=10)
    with pytest.raises(DataError, match=r"^data\.test: .*row 4"):
        prepare(spec, seed=0)


def test_a_missing_file_and_a_folder_without_parquet_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"data\.train: no Parquet files found at '.*absent\.parquet'"):
        check(tmp_path / "absent.parquet")
    folder = tmp_path / "csv_only"
    folder.mkdir()
    (folder / "train.csv").write_text("image,label\n")
    with pytest.raises(DataError, match=r"data\.train: no Parquet files found at '.*csv_only'"):
        check(folder)


def test_an_image_column_of_the_wrong_type_names_file_and_row(tmp_path):
    table = pa.table({"image": pa.array(range(10), pa.int64()), "label": pa.array([1] * 10, pa.int64())})
    with pytest.raises(DataError, match=r"bad\.parquet row 0: image column has type int64"):
        check(write(tmp_path, table))


def test_a_checked_file_that_changes_is_read_again(tmp_path):
    path = write(tmp_path, sample_table())
    assert check(path).num_rows == 50
    write(tmp_path, with_image(sample_table(), 5, b"junk"))
    with pytest.raises(DataError, match=r"bad\.parquet row 5: image bytes do not decode"):
        check(path)


def per_class(rows_per_class: int, classes: range = range(10)) -> pa.Table:
    """The first `rows_per_class` sample rows of each class."""
    table = pq.read_table(SAMPLE / "train.parquet")
    labels = np.asarray(table.column("label"))
    return table.take(np.concatenate([np.flatnonzero(labels == c)[:rows_per_class] for c in classes]))


def preflight(tmp_path, table, **changes):
    document = train_document()
    document["data"]["train"] = str(write(tmp_path, table, "train.parquet"))
    document["data"].update(changes.pop("data", {}))
    document.update(changes)
    check_data(validate_document(document))


def test_a_validation_fraction_that_leaves_the_validation_split_empty(tmp_path):
    # round(0.1 * 4) = 0 rows of every class would go to validation.
    with pytest.raises(DataError, match=r"^data\.validation_fraction: 0\.1 of 40 train rows leaves the validation "
                                        r"split empty"):
        preflight(tmp_path, per_class(4))
    preflight(tmp_path, per_class(4), data={"validation_fraction": 0.0})  # no validation asked for: fine


def test_a_fraction_that_leaves_a_class_without_training_rows(tmp_path):
    with pytest.raises(DataError, match=r"^data\.train_fraction: class\(es\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]"):
        preflight(tmp_path, per_class(10), data={"train_fraction": 0.01})
    # A learning-curve point trains too: it is checked before the job starts.
    with pytest.raises(DataError, match=r"^data\.train_fraction: class\(es\)"):
        preflight(tmp_path, per_class(10), learning_curve=[0.01])
    # Classes the data does not hold at all (num_classes above the labels used) are not a fault here.
    preflight(tmp_path, per_class(10, range(8)))


@pytest.mark.parametrize("kind", ["train", "compress"])
def test_the_job_entry_point_refuses_a_corrupt_image_before_writing_anything(tmp_path, kind):
    bad = write(tmp_path, with_image(sample_table(), 17, b"\x89PNG not really"))
    document = train_document(kind=kind)
    document["data"]["train"] = str(bad)
    if kind == "compress":
        del document["model"], document["train"]
        document.update(baseline=str(tmp_path / "no-model.keras"), variants=[{"name": "f16",
                        "pipeline": [{"quantize": {"mode": "float16"}}]}])
    storage = tmp_path / "results"
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(document))
    done = subprocess.run([sys.executable, "-m", "jobs", str(spec), "--output", str(storage)], cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"error: data.train: {bad} row 17: image bytes do not decode" in done.stderr
    assert "Traceback" not in done.stderr
    assert not storage.exists()


def image_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused_by_its_header_before_decoding(tmp_path):
    """A PNG of a few KB that expands to 100 MB: refused from its header, never decoded."""
    bomb = image_bytes(Image.new("L", (10_000, 10_000)))
    assert len(bomb) < 1_000_000
    path = write(tmp_path, with_image(sample_table(), 7, bomb))
    with pytest.raises(DataError, match=r"bad.parquet row 7: image is 10000 x 10000 pixels, expected 28 x 28"):
        check(path)


def test_pillows_bomb_limit_is_a_clean_error_too(tmp_path, monkeypatch):
    """An image beyond Pillow's own limit fails at open: the error names the row, no traceback."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 28 x 28 = 784 > 2 x 100
    with pytest.raises(DataError, match=r"row 0: image refused as a decompression bomb"):
        check(write(tmp_path, sample_table(3)))


def test_palette_pngs_are_expanded_and_16_bit_pngs_refused_with_the_reason(tmp_path):
    grey = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 200
    palette = Image.fromarray(grey).convert("P")
    table = with_image(sample_table(), 3, image_bytes(palette))
    index = check(write(tmp_path, table, "palette.parquet"))
    assert index.num_rows == 50
    spec = DataSpec(train=str(tmp_path / "palette.parquet"), test=str(tmp_path / "palette.parquet"), num_classes=10)
    images, _ = load_arrays(resolve(str(tmp_path / "palette.parquet"), "data.test"), spec)
    np.testing.assert_array_equal(images[3, :, :, 0], grey.astype(np.float32))  # the palette's colours
    deep = Image.fromarray(grey.astype(np.uint16) * 256)
    assert deep.mode.startswith("I;16")
    with pytest.raises(DataError, match=r"row 5: image is I;16 \(more than 8 bits per pixel\)"):
        check(write(tmp_path, with_image(sample_table(), 5, image_bytes(deep)), "deep.parquet"))


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (-1.0, "-1.0"),
                                          (256.0, "256.0")])
def test_numeric_pixels_must_be_finite_and_within_0_to_255(tmp_path, value, shown):
    pixels = np.full((4, 28 * 28), 10.0, np.float32)
    pixels[2, 100] = value
    table = pa.table({"pixels": pa.array(list(pixels), type=pa.list_(pa.float32())), "y": pa.array([0, 1, 2, 3])})
    with pytest.raises(DataError, match=rf"row 2: pixel value {re.escape(shown)} is not a finite number within 0..255"):
        check(write(tmp_path, table, "numeric.parquet"), image_column="pixels", label_column="y")


def test_an_image_struct_without_bytes_is_a_clean_error(tmp_path):
    table = pa.table({"image": pa.array([{"path": "a.png"}] * 3, type=pa.struct([("path", pa.string())])),
                      "label": pa.array([0, 1, 2])})
    with pytest.raises(DataError, match=r"row 0: the image column is a struct without a 'bytes' field"):
        check(write(tmp_path, table, "nobytes.parquet"))


def test_classes_without_rows_and_test_images_seen_in_train_are_counted(tmp_path):
    """Legal, but likely mistakes: each job warns with the counts, and the summary keeps the overlap."""
    train = sample_table(300)
    labels = train.column("label").to_numpy()
    train = train.filter(pa.array(labels != 9))  # class 9 has no row
    test = pq.read_table(SAMPLE / "test.parquet").slice(0, 40)
    test = pa.concat_tables([test, train.slice(0, 3).cast(test.schema)])  # 3 training images in the test split
    train_path, test_path = write(tmp_path, train, "train.parquet"), write(tmp_path, test, "test.parquet")
    prepared = prepare(DataSpec(train=str(train_path), test=str(test_path), num_classes=10), seed=0)
    assert prepared.empty_classes == (9,)
    assert prepared.test_in_train == 3
    first, second = prepared.warnings()
    assert "1 class(es) have no rows (9)" in first
    assert "3 of 43 test images also appear in data.train" in second

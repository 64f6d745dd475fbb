"""Run every bad input through the real job entry point and print the outcomes as a Markdown table.

    .venv/bin/python tests/collect_bad_inputs.py > /tmp/outcomes.md

Each case runs `python -m jobs <spec> --output <tmp>` with RAY_ADDRESS pointing
at a closed port, so any cluster contact would fail loudly; the table records
the exit code, the error it printed and the files written under the storage root.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import SAMPLE, train_document  # noqa: E402

SAMPLE_ROWS = pq.read_table(SAMPLE / "train.parquet")


def table(rows: int = 50) -> pa.Table:
    return SAMPLE_ROWS.slice(0, rows)


def with_image(t: pa.Table, row: int, data: bytes) -> pa.Table:
    images = t.column("image").to_pylist()
    images[row] = {"bytes": data, "path": None}
    return t.set_column(0, "image", pa.array(images, type=t.schema.field("image").type))


def with_label(t: pa.Table, row: int, value: int) -> pa.Table:
    labels = t.column("label").to_pylist()
    labels[row] = value
    return t.set_column(1, "label", pa.array(labels, pa.int64()))


def png(shape) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def numeric_table(value: float) -> pa.Table:
    pixels = np.full((50, 28 * 28), 10.0, np.float32)
    pixels[4, 100] = value
    return pa.table({"image": pa.array(list(pixels), type=pa.list_(pa.float32())),
                     "label": pa.array(np.arange(50) % 10)})


def per_class(rows: int) -> pa.Table:
    labels = np.asarray(SAMPLE_ROWS.column("label"))
    return SAMPLE_ROWS.take(np.concatenate([np.flatnonzero(labels == c)[:rows] for c in range(10)]))


def spec_case(**changes):
    return lambda folder: train_document(**changes)


def data_case(make_table=None, path_of=None, **data_changes):
    """A train spec whose data.train is a table written to the case folder, or a path made there."""
    def build(folder: Path) -> dict:
        document = train_document()
        if make_table is not None:
            path = folder / "train.parquet"
            pq.write_table(make_table(), path)
        else:
            path = path_of(folder)
        document["data"].update(train=str(path), **data_changes)
        return document
    return build


def not_parquet(folder: Path) -> Path:
    (folder / "junk.parquet").write_bytes(b"this is not parquet")
    return folder / "junk.parquet"


def csv_folder(folder: Path) -> Path:
    (folder / "csv").mkdir()
    (folder / "csv" / "train.csv").write_text("image,label\n")
    return folder / "csv"


CASES = [
    ("spec", "wrong type: train.epochs: ten", spec_case(train={"epochs": "ten"})),
    ("spec", "wrong type: train.epochs: true (a boolean is not a count)", spec_case(train={"epochs": True})),
    ("spec", "unknown top-level key trian", lambda f: {**train_document(), "trian": {}}),
    ("spec", "unknown nested key model.colour", spec_case(model={"colour": "blue"})),
    ("spec", "out of range: data.validation_fraction: 0.7",
     lambda f: {**train_document(), "data": {**train_document()["data"], "validation_fraction": 0.7}}),
    ("spec", "missing section data", lambda f: {k: v for k, v in train_document().items() if k != "data"}),
    ("spec", "kind not a string (kind: {a: 1})", spec_case(kind={"a": 1})),
    ("spec", "conflict: warmup_epochs 3 >= epochs 3", spec_case(train={"epochs": 3, "warmup_epochs": 3})),
    ("spec", "conflict: global_batch_size 1 < num_workers 2", spec_case(train={"global_batch_size": 1})),
    ("spec", "conflict: use_gpu without gpus_per_worker", spec_case(scaling={"use_gpu": True})),
    ("spec", "conflict: sweep asha grace_epochs 5 > epochs 2",
     lambda f: {**{k: v for k, v in train_document(kind="sweep").items() if k != "model"},
                "tune": {"scheduler": "asha", "grace_epochs": 5}}),
    ("path", "name: ../x", spec_case(name="../x")),
    ("path", "name: /abs", spec_case(name="/abs")),
    ("path", "name: a/b", spec_case(name="a/b")),
    ("path", "name with NUL", spec_case(name="a\x00b")),
    ("path", "empty name", spec_case(name="")),
    ("path", "output.storage relative (runs/)", None),  # --output is absolute; set in the spec instead
    ("data", "missing column label", data_case(lambda: table().drop_columns(["label"]))),
    ("data", "label of type string",
     data_case(lambda: table().set_column(1, "label", pa.array([str(v) for v in table().column("label").to_pylist()])))),
    ("data", "corrupt image bytes at row 17", data_case(lambda: with_image(table(), 17, b"\x89PNG junk"))),
    ("data", "32x32 image at row 21", data_case(lambda: with_image(table(), 21, png((32, 32))))),
    ("data", "decompression bomb at row 3 (10,000 x 10,000 PNG of a few KB)",
     data_case(lambda: with_image(table(), 3, encoded(Image.new("L", (10_000, 10_000)))))),
    ("data", "16-bit PNG at row 5",
     data_case(lambda: with_image(table(), 5, encoded(Image.fromarray(np.zeros((28, 28), np.uint16)))))),
    ("data", "image struct without bytes",
     data_case(lambda: pa.table({"image": pa.array([{"path": "a.png"}] * 50, pa.struct([("path", pa.string())])),
                                 "label": pa.array(np.arange(50) % 10)}))),
    ("data", "NaN pixel at row 4 (numeric column)", data_case(lambda: numeric_table(float("nan")))),
    ("data", "pixel 300 at row 4 (numeric column)", data_case(lambda: numeric_table(300.0))),
    ("data", "label 10 at row 9 (num_classes 10)", data_case(lambda: with_label(table(), 9, 10))),
    ("data", "empty Parquet file (0 rows)", data_case(lambda: table().slice(0, 0))),
    ("data", "validation_fraction 0.1 of 4 rows per class", data_case(lambda: per_class(4))),
    ("data", "train_fraction 0.01 of 10 rows per class", data_case(lambda: per_class(10), train_fraction=0.01)),
    ("data", "nonexistent file", data_case(path_of=lambda f: f / "absent.parquet")),
    ("data", "folder without Parquet", data_case(path_of=csv_folder)),
    ("data", "non-Parquet file", data_case(path_of=not_parquet)),
]


def run_case(case) -> dict:
    group, title, build = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        storage = folder / "results"
        if build is None:
            document, extra = train_document(output={"storage": "runs/"}), []
        else:
            document, extra = build(folder), ["--output", str(storage)]
        spec = folder / "bad.yaml"
        spec.write_text(yaml.safe_dump(document))
        done = subprocess.run([sys.executable, "-m", "jobs", str(spec), *extra], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}, timeout=600)
        written = sorted(str(p.relative_to(storage)) for p in storage.rglob("*")) if storage.exists() else []
        error = [line.strip() for line in done.stderr.splitlines() if line.startswith(("error:", "  "))]
        return {"group": group, "input": title, "exit": done.returncode,
                "error": " ".join(error).replace(str(folder), "<tmp>").replace("|", "\\|"),
                "written": ", ".join(written) or "none"}


def storage_rows() -> list[dict]:
    """The interrupted writes, run in this process as tests/test_storage.py and test_checkpoints.py do."""
    from cluster.storage import RunStorage

    rows = []
    for point in ("fsync", "replace"):
        with tempfile.TemporaryDirectory() as folder:
            storage = RunStorage(folder)
            storage.write_text("summary.json", json.dumps({"v": 1}))
            real = getattr(os, point)
            setattr(os, point, lambda *a, **k: (_ for _ in ()).throw(OSError("interrupted")))
            try:
                storage.write_text("summary.json", json.dumps({"v": 2, "pad": "x" * 10_000}))
            except OSError as error:
                outcome = str(error)
            finally:
                setattr(os, point, real)
            rows.append({"group": "storage", "input": f"summary.json rewrite interrupted at os.{point}",
                         "exit": "-", "error": f"OSError: {outcome}",
                         "written": f"summary.json still {storage.read_text('summary.json')}; "
                                    f"temporary files left: {len(os.listdir(folder)) - 1}"})
    return rows


def main() -> None:
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(run_case, CASES)) + storage_rows()
    print("| group | bad input | exit | error printed | files written |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['group']} | {row['input']} | {row['exit']} | `{row['error']}` | {row['written']} |")


if __name__ == "__main__":
    main()

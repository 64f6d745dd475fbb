"""The main job on data that is not Fashion-MNIST: RGB 32x32 images of 6 classes, through --set overrides only."""

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import ROOT

CLASSES = 6
SIZE = 32


def shape_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A shape of class `label` (square, disc, bar, column, cross, triangle) in a random colour and place, on noise."""
    image = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    colour = rng.integers(120, 256, 3).astype(np.uint8)
    y, x = rng.integers(6, SIZE - 14, 2)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    masks = [
        (rows >= y) & (rows < y + 9) & (cols >= x) & (cols < x + 9),
        (rows - y - 4) ** 2 + (cols - x - 4) ** 2 <= 20,
        (rows >= y + 3) & (rows < y + 6) & (cols >= x - 4) & (cols < x + 12),
        (cols >= x + 3) & (cols < x + 6) & (rows >= y - 4) & (rows < y + 12),
        ((rows >= y + 3) & (rows < y + 6) & (cols >= x) & (cols < x + 9))
        | ((cols >= x + 3) & (cols < x + 6) & (rows >= y) & (rows < y + 9)),
        (rows >= y) & (rows < y + 9) & (cols >= x) & (cols - x <= rows - y),
    ]
    image[masks[label]] = colour
    return image


def write_split(path, count_per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(CLASSES):
        for _ in range(count_per_class):
            buffer = io.BytesIO()
            Image.fromarray(shape_image(label, rng)).save(buffer, format="PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
            labels.append(label)
    pq.write_table(pa.table({"image": images, "label": pa.array(labels, pa.int64())}), path)


@pytest.fixture(scope="module")
def rgb_sweep(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rgb")
    write_split(folder / "train.parquet", 200, seed=0)
    write_split(folder / "test.parquet", 50, seed=1)
    overrides = [f"data.train={folder / 'train.parquet'}", f"data.test={folder / 'test.parquet'}",
                 f"data.num_classes={CLASSES}", f"data.image_shape=[{SIZE}, {SIZE}, 3]", "name=rgb",
                 "search.widths=[0.25]", "train.epochs=6", "constraints.max_size_kb=null",
                 "search.pipelines=[{name: float, pipeline: []}, {name: int8, pipeline: [{quantize: {mode: int8}}]}]",
                 # Short timings: this job tests learning other images, not the latency figures.
                 "evaluation.repetitions=30", "evaluation.batch_sizes=[32]", "evaluation.min_seconds=0.1",
                 "evaluation.memory=false"]
    command = [sys.executable, "-m", "jobs", "configs/quickstart.yaml", "--output", str(folder)]
    for item in overrides:
        command += ["--set", item]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((folder / "rgb" / "summary.json").read_text())


@pytest.mark.timeout(1500)
def test_main_job_learns_rgb_images_of_another_size_and_class_count(rgb_sweep):
    rows = {row["name"]: row for row in rgb_sweep["variants"]}
    assert set(rows) == {"bncnn-w0.25-d3-float", "bncnn-w0.25-d3-int8"}
    # Shapes on noise: chance is 1/6; a CNN that learned them is far above it, in float and in int8.
    assert rows["bncnn-w0.25-d3-float"]["accuracy"] >= 0.9, rows
    assert rows["bncnn-w0.25-d3-int8"]["accuracy"] >= rows["bncnn-w0.25-d3-float"]["accuracy"] - 0.03
    assert rows["bncnn-w0.25-d3-int8"]["num_test_samples"] == CLASSES * 50

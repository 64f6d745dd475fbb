"""Cut the bundled class-balanced sample from the full Fashion-MNIST Parquet set.

    python data/make_sample.py [SOURCE_DIR] [--train-per-class 600] [--test-per-class 100]

Writes data/fashion_mnist_sample/{train,test}.parquet in the same Hugging Face
image layout (`image` = struct{bytes: PNG, path}, `label` int64). Rows are
the first N of each class in file order (the source is already shuffled), then
shuffled with a fixed seed, so the sample is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "datasets" / "fashion_mnist"


def balanced_sample(table: pa.Table, per_class: int, seed: int) -> pa.Table:
    labels = table.column("label").to_numpy()
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < per_class:
            raise SystemExit(f"class {label} has only {len(rows)} rows, {per_class} requested")
        picked.append(rows[:per_class])
    order = np.random.default_rng(seed).permutation(np.concatenate(picked))
    return table.take(pa.array(order))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default=str(DEFAULT_SOURCE))
    parser.add_argument("--out", default=str(HERE / "fashion_mnist_sample"))
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", args.train_per_class, 0), ("test", args.test_per_class, 1)):
        files = sorted(Path(args.source).glob(f"{split}-*.parquet"))
        if not files:
            raise SystemExit(f"no {split}-*.parquet files in {args.source}")
        table = pads.dataset([str(f) for f in files], format="parquet").to_table()
        sample = balanced_sample(table, per_class, seed)
        pq.write_table(sample, out / f"{split}.parquet", compression="zstd", row_group_size=1000)
        print(f"{out / f'{split}.parquet'}: {sample.num_rows} rows")


if __name__ == "__main__":
    main()

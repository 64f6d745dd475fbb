"""The Ray Data pipeline: read Parquet → decode → split → augment (train only), streaming; a cached job's
validation rows are held in the object store instead (`HeldSplit`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.extensions import ArrowTensorArray

from cluster.data.augment import augment_batch
from cluster.data.checks import SplitIndex, check_split, kept_files
from cluster.data.decode import decode_column, row_keys
from cluster.data.sources import Source, resolve
from cluster.data.splits import SplitPlan, plan_splits

DECODE_BATCH_ROWS = 512
# The augmentation stage's batches, by their float32 pixels' size. Ray Data's default batch (here a
# decoded block, about 460 rows) made each epoch of 27,000 Fashion-MNIST rows cost 1.1 CPU-s, 0.15 of
# it augmenting and the rest tasks and transfers, on the cores the trainers use; 2,048-4,096-row
# batches cost 0.5 CPU-s, and the consumer's 90th-percentile wait per 256-row batch fell from 26 to 2 ms.
AUGMENT_BATCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class PreparedData:
    """Checked sources and the split plan: everything the pipeline needs, known before training."""

    train_source: Source
    test_source: Source
    plan: SplitPlan
    test_rows: int
    empty_classes: tuple[int, ...] = ()  # class ids below num_classes with no train row
    test_in_train: int = 0  # test rows whose pixels are identical to some train row's

    def warnings(self) -> list[str]:
        """What is legal but likely a mistake in the data, with the counts."""
        found = []
        if self.empty_classes:
            found.append(f"data.train: {len(self.empty_classes)} class(es) have no rows "
                         f"({', '.join(map(str, self.empty_classes[:20]))}); is data.num_classes right?")
        if self.test_in_train:
            found.append(f"data.test: {self.test_in_train} of {self.test_rows} test images also appear in "
                         "data.train (identical pixels): test accuracy overstates what unseen data gets")
        return found


@dataclass(frozen=True)
class HeldSplit:
    """A split held whole in the object store: a cached job's validation rows, float32 pixels and labels.

    Each Ray Train worker reads its share straight from the store rather than through a Ray Data
    stream, so a run starts one split coordinator (an actor process, about 2.4 CPU-s) fewer and
    no stream per epoch. Equal shares, as Ray Data's equal split gives: the last `rows % world`
    rows are not read.
    """

    images: ray.ObjectRef
    labels: ray.ObjectRef
    rows: int

    def share(self, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.rows // world
        images, labels = ray.get([self.images, self.labels])
        return images[rank * size:(rank + 1) * size], labels[rank * size:(rank + 1) * size]


@dataclass(frozen=True)
class RunInputs:
    """A training run's data. The train split, augmented afresh every epoch: one stream of all its rows
    (`train`), which Ray Train splits between its workers; or, when its rows are held in the object store
    and several workers train, one stream per worker of its own equal share (`shares`). The validation
    split, never augmented: held in the object store when the job caches its splits, else streamed."""

    train: ray.data.Dataset | None
    validation: ray.data.Dataset | HeldSplit
    shares: tuple[ray.data.Dataset, ...] = ()

    def streamed(self) -> dict[str, ray.data.Dataset]:
        """The datasets Ray Train splits between its workers, by name."""
        return {name: split for name, split in (("train", self.train), ("validation", self.validation))
                if isinstance(split, ray.data.Dataset)}

    def per_worker(self, workers: int) -> list[dict[str, ray.data.Dataset]] | None:
        """Each worker's own datasets, by rank, which it iterates itself; None when Ray Train must split them.

        Ray Train's split starts a dataset manager and a split coordinator per run: two actor processes,
        and every batch passes through the coordinator. A lone worker needs no split; several workers
        need none when each has its own share of the held train rows.
        """
        if self.shares:
            return [{"train": share} for share in self.shares]
        return [self.streamed()] if workers == 1 else None


def prepare(data, seed: int) -> PreparedData:
    """Resolve and check both splits, and plan the validation / train-fraction subsets.

    `data` is the spec's `DataSpec`. Raises `DataError` naming the field, file and row.
    """
    train_source = resolve(data.train, "data.train")
    test_source = resolve(data.test, "data.test")
    common = dict(image_column=data.image_column, label_column=data.label_column,
                  num_classes=data.num_classes, image_shape=tuple(data.image_shape))
    # The job reads the whole test split to evaluate, and with `data.cache` the whole train split: the
    # check keeps what it decoded for that: on full Fashion-MNIST the check and those reads took 8.4-9.6 s
    # when the reads decoded again, 5.2-5.4 s now.
    train: SplitIndex = check_split(train_source, field="data.train", keep_pixels=data.cache, **common)
    test: SplitIndex = check_split(test_source, field="data.test", keep_pixels=True, **common)
    plan = plan_splits(train.keys, train.labels, data.num_classes, data.validation_fraction,
                       data.train_fraction, seed)
    counts = np.bincount(train.labels, minlength=data.num_classes)
    return PreparedData(train_source=train_source, test_source=test_source, plan=plan, test_rows=test.num_rows,
                        empty_classes=tuple(int(c) for c in np.flatnonzero(counts == 0)),
                        test_in_train=int(np.isin(test.keys, train.keys).sum()))


def _decode(batch: pa.Table, image_column: str, label_column: str, image_shape: tuple) -> dict:
    pixels = decode_column(batch.column(image_column), image_shape)
    return {"image": pixels, "label": batch.column(label_column).to_numpy().astype(np.int64),
            "key": row_keys(pixels)}


def _select(batch: dict, plan: SplitPlan, split: str) -> dict:
    train, validation = plan.assign(batch["key"], batch["label"])
    keep = train if split == "train" else validation
    return {name: values[keep] for name, values in batch.items()}


def _as_float(batch: dict) -> dict:
    return {"image": batch["image"].astype(np.float32), "label": batch["label"]}


def read_decoded(source: Source, data) -> ray.data.Dataset:
    """Rows of `image` (N, H, W, C pixels), `label` (int64) and `key` (uint64)."""
    context = ray.data.DataContext.get_current()
    # Ray 2.60's Parquet datasource V2 (its default) spends 2-5 s listing files on
    # every read, even of one local file; V1 reads and decodes the bundled sample
    # in 0.6 s. The dataset keeps the context it was made with, so restore after.
    previous, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        dataset = ray.data.read_parquet(list(source.files), filesystem=source.filesystem,
                                        columns=[data.image_column, data.label_column])
    finally:
        context.use_datasource_v2 = previous
    return dataset.map_batches(
        _decode, batch_format="pyarrow", batch_size=DECODE_BATCH_ROWS,
        fn_kwargs=dict(image_column=data.image_column, label_column=data.label_column,
                       image_shape=tuple(data.image_shape)))


def augment_batch_rows(image_shape: tuple) -> int:
    """Rows per augmentation batch: `AUGMENT_BATCH_BYTES` of float32 pixels (2,674 Fashion-MNIST images)."""
    return max(1, AUGMENT_BATCH_BYTES // (4 * int(np.prod(image_shape))))


def run_inputs(prepared: PreparedData, data, augment: list[dict], seed: int, clock, workers: int = 1) -> RunInputs:
    """The train split as augmenting Ray datasets, and the validation split (see `RunInputs`).

    With `data.cache` and several `workers`, the train rows are cut into one equal share per worker.
    """
    # A job's output is a log, not a terminal: Ray Data's progress bars, redrawn there several times a
    # second, buried the job's own lines (a job sent by plain `ray job submit` carries no
    # RAY_DATA_DISABLE_PROGRESS_BARS) and cost CPU in the split coordinator, Ray's log monitor and the
    # driver. A dataset keeps the context it is made with, so this reaches its coordinator.
    ray.data.DataContext.get_current().enable_progress_bars = False

    def augmenting(dataset: ray.data.Dataset) -> ray.data.Dataset:
        return dataset.randomize_block_order(seed=seed).map_batches(
            augment_batch, fn_kwargs=dict(ops=augment, seed=seed, clock=clock), batch_format="numpy",
            batch_size=augment_batch_rows(tuple(data.image_shape)))

    if not data.cache:
        decoded = read_decoded(prepared.train_source, data)
        train = decoded.map_batches(_select, fn_kwargs=dict(plan=prepared.plan, split="train"),
                                    batch_format="numpy")
        validation = decoded.map_batches(_select, fn_kwargs=dict(plan=prepared.plan, split="validation"),
                                         batch_format="numpy").map_batches(_as_float, batch_format="numpy")
        return RunInputs(train=augmenting(train), validation=validation)
    rows, validation = cached_splits(prepared, data)
    if workers == 1:
        return RunInputs(train=augmenting(_dataset_of(rows)), validation=validation)
    return RunInputs(train=None, validation=validation,
                     shares=tuple(augmenting(_dataset_of(share)) for share in equal_shares(rows, workers, seed)))


def equal_shares(rows: dict[str, np.ndarray], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` equal shares of the rows, drawn at random by `seed`. As in Ray Data's equal split, the
    `rows % count` rows left over are not read; every share runs the same steps (`batches.epoch_steps`)."""
    order = np.random.default_rng(seed).permutation(len(rows["label"]))
    size = len(order) // count
    return [{name: values[order[share * size:(share + 1) * size]] for name, values in rows.items()}
            for share in range(count)]


def cached_splits(prepared: PreparedData, data) -> tuple[dict[str, np.ndarray], HeldSplit]:
    """Both splits' decoded rows, as they will stay in the object store: the train rows' columns
    (`image` as uint8 pixels, `label`, `key`; only augmentation streams every epoch), and the validation
    rows put there as float32 arrays.

    It runs where the Ray Train run starts: in a job's driver it takes the rows the preflight check kept
    (`decoded_files`); a sweep's trial actor, a process of its own, decodes every row once. Reading through Ray Data tasks instead cost
    each Ray Train run 1.5-2 s of task start-up before its workers started (on the bundled sample: 2.6 s
    against 0.4-0.9 s), and its blocks lived wherever the tasks ran.
    """
    train, images, labels = [], [], []
    for pixels, split_labels, keys, in_train, in_validation in _train_split_files(prepared, data):
        train.append({"image": pixels[in_train], "label": split_labels[in_train], "key": keys[in_train]})
        images.append(pixels[in_validation].astype(np.float32))
        labels.append(split_labels[in_validation])
    validation = HeldSplit(images=ray.put(np.concatenate(images)), labels=ray.put(np.concatenate(labels)),
                           rows=sum(len(part) for part in labels))
    return {name: np.concatenate([part[name] for part in train]) for name in train[0]}, validation


def _dataset_of(columns: dict[str, np.ndarray]) -> ray.data.Dataset:
    """One Ray dataset of the rows, put in the object store in blocks of `DECODE_BATCH_ROWS`, as the
    streaming read makes them, so a shuffled block order still mixes the rows finely.

    `from_blocks` reads each block's size and schema here; `from_arrow` would start a Ray task per
    block to learn them (1.7 s for the first dataset of a job on the bundled sample).
    """
    rows = len(columns["label"])
    blocks = [pa.table({name: ArrowTensorArray.from_numpy(values[start:start + DECODE_BATCH_ROWS])
                        if values.ndim > 1 else values[start:start + DECODE_BATCH_ROWS]
                        for name, values in columns.items()})
              for start in range(0, max(rows, 1), DECODE_BATCH_ROWS)]
    return ray.data.from_blocks(blocks)


def decoded_files(source: Source, data):
    """Each file of an (already checked) split as (pixels, int64 labels): the rows its check kept in this
    process, else read and decoded now. The kept arrays are read-only; callers index or copy them."""
    kept = kept_files(source, data.image_column, data.label_column, data.num_classes, tuple(data.image_shape))
    if kept is not None:
        for file in kept:
            yield file.pixels, file.labels
        return
    for path in source.files:
        table = pq.read_table(source.filesystem.open_input_file(path),
                              columns=[data.image_column, data.label_column])
        yield (decode_column(table.column(data.image_column), tuple(data.image_shape)),
               table.column(data.label_column).to_numpy().astype(np.int64))


def load_arrays(source: Source, data) -> tuple[np.ndarray, np.ndarray]:
    """A whole (already checked) split as float32 pixels and int64 labels."""
    images, labels = zip(*decoded_files(source, data))
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def _train_split_files(prepared: PreparedData, data):
    """Each train file decoded: pixels, labels, row keys, and its masks of train and validation rows."""
    for pixels, labels in decoded_files(prepared.train_source, data):
        keys = row_keys(pixels)
        train, validation = prepared.plan.assign(keys, labels)
        yield pixels, labels, keys, train, validation


def validation_arrays(prepared: PreparedData, data) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows of the train split (what a search scores candidates on; never the test split)."""
    parts = [(pixels[validation].astype(np.float32), labels[validation])
             for pixels, labels, _, _, validation in _train_split_files(prepared, data)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def representative_images(prepared: PreparedData, data, count: int, batch_size: int = 32):
    """Calibration data for int8 quantization: `count` rows of the train split (never validation or test).

    Returns the callable the TFLite converter wants: each call yields batches
    of raw pixels, the same rows every time.
    """
    chosen = []
    for pixels, _, _, train, _ in _train_split_files(prepared, data):
        chosen.append(pixels[train][: count - sum(len(c) for c in chosen)].astype(np.float32))
        if sum(len(c) for c in chosen) >= count:
            break
    images = np.concatenate(chosen)

    def batches():
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
    return batches

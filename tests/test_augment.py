"""Augmentation: pixel-exact ops, per-row reproducibility, fresh draws each epoch, train split only."""

import numpy as np
import pytest

from cluster.data.augment import augment_images
from cluster.data.decode import row_keys

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(64, 28, 28, 1)).astype(np.float32)
KEYS = row_keys(IMAGES)


def test_flip_left_right_is_pixel_exact():
    out = augment_images(IMAGES, KEYS, [{"op": "flip_left_right", "p": 1.0}], seed=0, epoch=0)
    np.testing.assert_array_equal(out, IMAGES[:, :, ::-1, :])


def test_flip_up_down_is_pixel_exact():
    out = augment_images(IMAGES, KEYS, [{"op": "flip_up_down", "p": 1.0}], seed=0, epoch=0)
    np.testing.assert_array_equal(out, IMAGES[:, ::-1, :, :])


def test_probability_zero_changes_nothing_and_half_flips_about_half():
    untouched = augment_images(IMAGES, KEYS, [{"op": "flip_left_right", "p": 0.0}], seed=0, epoch=0)
    np.testing.assert_array_equal(untouched, IMAGES)
    keys = np.arange(4000, dtype=np.uint64)
    images = np.zeros((4000, 2, 2, 1), np.float32)
    images[:, :, 0] = 1.0
    out = augment_images(images, keys, [{"op": "flip_left_right", "p": 0.5}], seed=0, epoch=0)
    flipped = (out[:, 0, 1, 0] == 1.0).mean()
    assert 0.45 < flipped < 0.55


def test_translate_moves_content_within_bounds():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 4, 4, 0] = 255.0
    seen = set()
    for epoch in range(40):
        out = augment_images(image, np.array([7], np.uint64),
                             [{"op": "random_translate", "p": 1.0, "max_pixels": 2}], seed=0, epoch=epoch)
        y, x = np.argwhere(out[0, :, :, 0] == 255.0)[0]
        assert abs(y - 4) <= 2 and abs(x - 4) <= 2 and out.sum() == 255.0
        seen.add((y, x))
    assert len(seen) > 5


def test_brightness_and_contrast_stay_in_pixel_range():
    ops = [{"op": "brightness", "p": 1.0, "max_delta": 80.0}, {"op": "contrast", "p": 1.0, "lower": 0.5, "upper": 2.0}]
    out = augment_images(IMAGES, KEYS, ops, seed=0, epoch=0)
    assert out.min() >= 0.0 and out.max() <= 255.0 and out.dtype == np.float32
    assert not np.allclose(out, IMAGES)


OPS = [{"op": "flip_left_right", "p": 0.5}, {"op": "random_crop", "p": 0.5, "padding": 2},
       {"op": "brightness", "p": 0.5, "max_delta": 20.0}]


def test_same_seed_and_epoch_repeat_whatever_the_batching():
    whole = augment_images(IMAGES, KEYS, OPS, seed=5, epoch=3)
    parts = np.concatenate([augment_images(IMAGES[i:i + 10], KEYS[i:i + 10], OPS, seed=5, epoch=3)
                            for i in range(0, 64, 10)])
    np.testing.assert_array_equal(whole, parts)


def test_epochs_and_seeds_differ():
    epoch0 = augment_images(IMAGES, KEYS, OPS, seed=5, epoch=0)
    epoch1 = augment_images(IMAGES, KEYS, OPS, seed=5, epoch=1)
    other_seed = augment_images(IMAGES, KEYS, OPS, seed=6, epoch=0)
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, other_seed)


def split_rows(split) -> list[dict]:
    """A split's rows, whether a Ray dataset or held in the object store."""
    from cluster.data.pipeline import HeldSplit

    if isinstance(split, HeldSplit):
        images, labels = split.share(rank=0, world=1)
        return [{"image": image, "label": label} for image, label in zip(images, labels)]
    return split.take_all()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "streamed"])
def test_ray_data_stage_streams_fresh_epochs_and_leaves_validation_alone(ray_client, cache):
    """The real pipeline on the cluster: labels stay with images, epochs differ, validation is raw; the same
    whether the splits are decoded once into the object store or read from Parquet every epoch."""
    from cluster.data.pipeline import HeldSplit, load_arrays, run_inputs
    from tests.conftest import sample_pipeline

    ray = ray_client
    data, prepared, clock = sample_pipeline(train_fraction=0.1, cache=cache)
    ops = [{"op": "flip_left_right", "p": 1.0}]
    inputs = run_inputs(prepared, data, ops, seed=0, clock=clock)

    originals, labels = load_arrays(prepared.train_source, data)
    by_key = {int(k): (img, lbl) for k, img, lbl in zip(row_keys(originals), originals, labels)}

    def epoch_rows(epoch):
        ray.get(clock.set.remote(epoch))
        rows = inputs.train.take_all()
        return rows

    first = epoch_rows(0)
    assert len(first) == prepared.plan.train_rows
    for row in first:
        # A flip with p=1 of the original: find the original by the flipped-back content.
        original, label = by_key[int(row_keys(row["image"][None, :, ::-1, :])[0])]
        np.testing.assert_array_equal(row["image"][:, ::-1, :], original)
        assert row["label"] == label

    crop = [{"op": "random_translate", "p": 1.0, "max_pixels": 3}]
    moving = run_inputs(prepared, data, crop, seed=0, clock=clock).train
    ray.get(clock.set.remote(0))
    a = sorted(moving.take_all(), key=lambda r: int(r["label"]) * 10**9 + int(r["image"].sum()))
    ray.get(clock.set.remote(1))
    b = moving.take_all()
    ray.get(clock.set.remote(0))
    a_again = moving.take_all()
    sums = lambda rows: sorted(float(r["image"].sum()) for r in rows)  # noqa: E731
    assert sums(a) != sums(b), "epoch 1 must draw different translations from epoch 0"
    assert sums(a) == sums(a_again), "the same seed and epoch must repeat"

    # Held in the object store when the splits are cached (each worker reads its share), else streamed.
    assert isinstance(inputs.validation, HeldSplit) == cache
    validation = split_rows(inputs.validation)
    assert len(validation) == prepared.plan.validation_rows
    for row in validation:
        original, label = by_key[int(row_keys(row["image"][None])[0])]
        np.testing.assert_array_equal(row["image"], original)
        assert row["label"] == label


def test_cached_and_streamed_splits_give_the_same_rows_and_the_same_draws(ray_client):
    """Decoding once into the object store changes where the rows come from, never which rows an epoch
    holds nor how they are augmented."""
    from cluster.data.pipeline import run_inputs
    from tests.conftest import sample_pipeline

    ray = ray_client
    data, prepared, clock = sample_pipeline(train_fraction=0.1)
    ops = [{"op": "random_translate", "p": 1.0, "max_pixels": 3}, {"op": "flip_left_right", "p": 0.5}]
    cached = run_inputs(prepared, data, ops, seed=0, clock=clock)
    streamed = run_inputs(prepared, data.model_copy(update={"cache": False}), ops, seed=0, clock=clock)
    ray.get(clock.set.remote(2))

    def rows(split):
        return sorted((int(row["label"]), row["image"].dtype.str, row["image"].tobytes())
                      for row in split_rows(split))

    assert rows(cached.train) == rows(streamed.train)
    assert rows(cached.validation) == rows(streamed.validation)

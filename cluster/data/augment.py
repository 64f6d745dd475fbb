"""Image augmentations, run as a streaming Ray Data stage on the train split only.

Each row's random draws are a function of (spec seed, epoch, row key, op), so
an epoch is reproducible from the seed alone whatever the batching, and every
epoch differs. The epoch comes from an actor with `EpochClock`'s methods that
the Train workers advance before any worker's stream of that epoch starts
(`cluster.training.loop.run_epochs`), so the stage always sees the new value.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import ray

from cluster.data.splits import draw

DRAWS_PER_OP = 3  # whether to apply, and up to two parameters
_SCALE = float(2**64)


class EpochClock:
    """The epoch the train workers are on, read by the augmentation stage: run as a Ray actor
    (a training run's is `cluster.training.trainer.RunLog`).

    It outlives worker restarts (the driver owns it), so its log of epochs
    begun shows what a failure cost: an epoch begun twice was repeated.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.started: list[int] = []

    def set(self, epoch: int) -> None:
        """The epoch the augmentation draws for; set before that epoch's stream starts, which can be
        ahead of its training (the loop starts an epoch's stream while the previous one validates)."""
        self.epoch = epoch

    def begin(self, epoch: int) -> None:
        """Training of `epoch` began (logged once per time it begins)."""
        self.started.append(epoch)

    def get(self) -> int:
        return self.epoch

    def epochs_started(self) -> list[int]:
        return list(self.started)


def _uniform(keys: np.ndarray, seed: int, epoch: int, slot: int) -> np.ndarray:
    return draw(keys, seed, epoch, slot).astype(np.float64) / _SCALE


def _shift(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Translate each image by whole pixels, filling the uncovered border with zeros."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    for i, (y, x) in enumerate(zip(dy, dx)):
        src_y, dst_y = slice(max(0, -y), min(height, height - y)), slice(max(0, y), min(height, height + y))
        src_x, dst_x = slice(max(0, -x), min(width, width - x)), slice(max(0, x), min(width, width + x))
        out[i, dst_y, dst_x] = images[i, src_y, src_x]
    return out


def _offsets(u: np.ndarray, limit: int) -> np.ndarray:
    """Integers uniform in [-limit, limit]."""
    return np.minimum((u * (2 * limit + 1)).astype(np.int64), 2 * limit) - limit


def apply_op(op: dict, images: np.ndarray, keys: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
    """Apply one augmentation (as dumped from the spec) to the rows it draws."""
    slot = index * DRAWS_PER_OP
    chosen = _uniform(keys, seed, epoch, slot) < op["p"]
    if not chosen.any():
        return images
    u1 = _uniform(keys, seed, epoch, slot + 1)[chosen]
    u2 = _uniform(keys, seed, epoch, slot + 2)[chosen]
    picked = images[chosen]
    name = op["op"]
    if name == "flip_left_right":
        picked = picked[:, :, ::-1, :]
    elif name == "flip_up_down":
        picked = picked[:, ::-1, :, :]
    elif name in ("random_translate", "random_crop"):
        # A crop of the zero-padded image back to size is a shift by up to `padding`.
        limit = op["max_pixels"] if name == "random_translate" else op["padding"]
        picked = _shift(picked, _offsets(u1, limit), _offsets(u2, limit))
    elif name == "brightness":
        delta = (2.0 * u1 - 1.0) * op["max_delta"]
        picked = np.clip(picked + delta[:, None, None, None], 0.0, 255.0)
    elif name == "contrast":
        factor = op["lower"] + u1 * (op["upper"] - op["lower"])
        mean = picked.mean(axis=(1, 2, 3), keepdims=True)
        picked = np.clip((picked - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)
    else:
        raise ValueError(f"unknown augmentation {name!r}")
    images = images.copy()
    images[chosen] = picked
    return images


def augment_images(images: np.ndarray, keys: np.ndarray, ops: Sequence[dict], seed: int, epoch: int) -> np.ndarray:
    """All augmentations in spec order; returns float32 pixels in [0, 255]."""
    images = images.astype(np.float32, copy=False)
    for index, op in enumerate(ops):
        images = apply_op(op, images, keys, seed, epoch, index)
    return images.astype(np.float32, copy=False)


def augment_batch(batch: dict, ops: Sequence[dict], seed: int, clock: "ray.actor.ActorHandle | None",
                  epoch: int = 0) -> dict:
    """The Ray Data `map_batches` function: reads the current epoch, augments the images."""
    if clock is not None:
        epoch = ray.get(clock.get.remote())
    return {"image": augment_images(batch["image"], batch["key"], ops, seed, epoch), "label": batch["label"]}

"""Exact, class-balanced, streaming splits.

Every row gets a pseudo-random number from its content key. Per class, the
rows whose number is among the k smallest form the subset, so a fraction f of
a class of n rows is exactly round(f * n) rows, whatever order or batching
Ray Data uses. The plan is a threshold per class; applying it is a filter
that needs no shuffle and no materialization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VALIDATION_SALT = 0x5EED_0001
FRACTION_SALT = 0x5EED_0002
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (Steele et al.'s SplitMix64 finalizer)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def draw(keys: np.ndarray, *salts: int) -> np.ndarray:
    """A pseudo-random uint64 per key, a different stream for each tuple of salts."""
    mixed = keys.astype(np.uint64)
    for salt in salts:
        mixed = splitmix64(mixed ^ splitmix64(np.uint64(salt & 0xFFFFFFFFFFFFFFFF)))
    return mixed


@dataclass(frozen=True)
class Subset:
    """Per class: how many rows to keep and the largest kept draw."""

    salt: int
    counts: tuple[int, ...]
    thresholds: tuple[int, ...]

    def mask(self, keys: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
        values = draw(keys, seed, self.salt)
        counts = np.asarray(self.counts)[labels]
        thresholds = np.asarray(self.thresholds, dtype=np.uint64)[labels]
        return (counts > 0) & (values <= thresholds)


def choose(keys: np.ndarray, labels: np.ndarray, num_classes: int, fraction: float, seed: int,
           salt: int) -> Subset:
    """The subset holding round(fraction * n_c) rows of every class c."""
    values = draw(keys, seed, salt)
    counts, thresholds = [], []
    for label in range(num_classes):
        ranked = np.sort(values[labels == label])
        count = int(round(fraction * len(ranked)))
        counts.append(count)
        thresholds.append(int(ranked[count - 1]) if count else 0)
    return Subset(salt=salt, counts=tuple(counts), thresholds=tuple(thresholds))


@dataclass(frozen=True)
class SplitPlan:
    """Which train-split rows go to validation, and which of the rest train."""

    seed: int
    validation: Subset
    train: Subset

    def assign(self, keys: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train mask, validation mask) for a batch of rows."""
        validation = self.validation.mask(keys, labels, self.seed)
        train = ~validation & self.train.mask(keys, labels, self.seed)
        return train, validation

    @property
    def train_rows(self) -> int:
        return sum(self.train.counts)

    @property
    def validation_rows(self) -> int:
        return sum(self.validation.counts)


def plan_splits(keys: np.ndarray, labels: np.ndarray, num_classes: int, validation_fraction: float,
                train_fraction: float, seed: int) -> SplitPlan:
    validation = choose(keys, labels, num_classes, validation_fraction, seed, VALIDATION_SALT)
    rest = ~validation.mask(keys, labels, seed)
    train = choose(keys[rest], labels[rest], num_classes, train_fraction, seed, FRACTION_SALT)
    return SplitPlan(seed=seed, validation=validation, train=train)

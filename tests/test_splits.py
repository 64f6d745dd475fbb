"""Validation and train-fraction subsets: exact sizes, class-balanced, disjoint, reproducible."""

import numpy as np
import pytest

from cluster.data.splits import plan_splits
from cluster.data.checks import check_split
from cluster.data.sources import resolve
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def index():
    return check_split(resolve(str(SAMPLE / "train.parquet"), "data.train"), "image", "label", 10, (28, 28, 1),
                       "data.train")


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_fractions_are_exact_and_class_balanced(index, fraction):
    plan = plan_splits(index.keys, index.labels, 10, validation_fraction=0.1, train_fraction=fraction, seed=3)
    train, validation = plan.assign(index.keys, index.labels)
    assert not (train & validation).any()
    assert np.bincount(index.labels[validation], minlength=10).tolist() == [60] * 10
    per_class = int(round(fraction * 540))
    assert np.bincount(index.labels[train], minlength=10).tolist() == [per_class] * 10
    assert plan.train_rows == train.sum() and plan.validation_rows == validation.sum()


def test_assignment_does_not_depend_on_batching_or_order(index):
    plan = plan_splits(index.keys, index.labels, 10, 0.1, 0.5, seed=1)
    whole = plan.assign(index.keys, index.labels)[0]
    order = np.random.default_rng(0).permutation(len(index.keys))
    pieces = np.zeros(len(order), bool)
    for chunk in np.array_split(order, 7):
        pieces[chunk] = plan.assign(index.keys[chunk], index.labels[chunk])[0]
    np.testing.assert_array_equal(whole, pieces)


def test_seed_changes_the_subset_and_repeats_it(index):
    a = plan_splits(index.keys, index.labels, 10, 0.1, 0.5, seed=1).assign(index.keys, index.labels)[0]
    b = plan_splits(index.keys, index.labels, 10, 0.1, 0.5, seed=1).assign(index.keys, index.labels)[0]
    c = plan_splits(index.keys, index.labels, 10, 0.1, 0.5, seed=2).assign(index.keys, index.labels)[0]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_smaller_fraction_is_a_subset_of_larger(index):
    small = plan_splits(index.keys, index.labels, 10, 0.1, 0.25, seed=0).assign(index.keys, index.labels)[0]
    large = plan_splits(index.keys, index.labels, 10, 0.1, 0.5, seed=0).assign(index.keys, index.labels)[0]
    assert not (small & ~large).any()

"""ASHA that stops a trial only when it is worse by more than the validation set can resolve.

Ray's ASHA stops a trial whose metric at a rung is below the rung's cutoff (the
top 1/reduction_factor of the trials recorded there), however small the gap.
Validation accuracy on n rows is an estimate with standard error
sqrt(p (1 - p) / n): on Fashion-MNIST's 6,000 validation rows that is about
0.5 pt, and a full sweep once stopped the scale that held the sweet spot for
a 0.03 pt gap at epoch 2. Here the cutoff is lowered by one standard error, so
a stop means "worse", not "indistinguishable".
"""

from __future__ import annotations

import math
from functools import partial

from ray.tune.schedulers import AsyncHyperBandScheduler


def accuracy_standard_error(accuracy: float, rows: int) -> float:
    """Standard error of an accuracy measured on `rows` independent examples."""
    accuracy = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(accuracy * (1.0 - accuracy) / rows)


def _cutoff_less_noise(cutoff, rows: int, recorded):
    value = cutoff(recorded)
    return None if value is None else value - accuracy_standard_error(float(value), rows)


class NoiseAwareASHA(AsyncHyperBandScheduler):
    """ASHA on an accuracy metric (mode "max") measured on `validation_rows` rows."""

    def __init__(self, validation_rows: int, **kwargs) -> None:
        if validation_rows < 1:
            raise ValueError(f"validation_rows must be positive, got {validation_rows}")
        if kwargs.get("mode", "max") != "max":
            raise ValueError("NoiseAwareASHA's margin is for an accuracy that is maximised")
        super().__init__(**kwargs)
        # Ray keeps the rungs in private brackets; only their cutoff changes, the rungs and
        # the bookkeeping are Ray's own.
        for bracket in self._brackets:
            bracket.cutoff = partial(_cutoff_less_noise, bracket.cutoff, validation_rows)

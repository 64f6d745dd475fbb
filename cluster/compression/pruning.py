"""Magnitude pruning (Zhu & Gupta, 2017) applied layer by layer.

Only layers the toolkit can prune (those with a kernel in its registry:
Conv*, Dense, ...) are wrapped; Rescaling, pooling, Flatten and Dropout pass
through untouched. Sparsity is always reported as measured zeros, never as
the number that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

from cluster.compression.errors import CompressionError
from cluster.compression.layers import (check_exclusions, check_functional, select_layers,
                                        unwrap, wrap_layers)
from cluster.compression.prepared import Prepared

TECHNIQUE = "prune"
SCHEDULES = ("polynomial_decay", "constant")
# Attributes holding the weights a layer's sparsity is measured on.
KERNEL_ATTRIBUTES = ("kernel", "pointwise_kernel", "embeddings")


@dataclass(frozen=True)
class PruningConfig:
    """How to prune.

    schedule "polynomial_decay" ramps sparsity from `initial_sparsity` to
    `final_sparsity` between `begin_step` and `end_step`, updating the masks
    every `frequency` steps; "constant" holds `final_sparsity` from
    `begin_step` on. `sparsity_m_by_n=(2, 4)` (the toolkit's convention: 2
    zeros in every 4 consecutive input-channel weights) replaces the schedule
    by N:M structured sparsity, whose masks are set once, at the first step.
    """

    final_sparsity: float = 0.5
    schedule: str = "polynomial_decay"
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    power: float = 3.0
    sparsity_m_by_n: tuple[int, int] | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        def bad(name, why):
            raise CompressionError(f"{why} (got {getattr(self, name)!r})", step=TECHNIQUE, field=name)

        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {SCHEDULES}")
        for name in ("final_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                bad(name, "sparsity must be in [0, 1)")
        if self.initial_sparsity > self.final_sparsity:
            bad("initial_sparsity", f"must not exceed final_sparsity {self.final_sparsity}")
        if not isinstance(self.begin_step, int) or self.begin_step < 0:
            bad("begin_step", "must be an integer >= 0")
        if self.schedule == "polynomial_decay" and (
                not isinstance(self.end_step, int) or self.end_step <= self.begin_step):
            bad("end_step", f"must be an integer > begin_step {self.begin_step}")
        if self.schedule == "constant" and (not isinstance(self.end_step, int) or (
                self.end_step != -1 and self.end_step <= self.begin_step)):
            bad("end_step", f"must be -1 (never stop) or an integer > begin_step {self.begin_step}")
        if not isinstance(self.frequency, int) or self.frequency < 1:
            bad("frequency", "must be an integer >= 1")
        if not isinstance(self.power, (int, float)) or self.power <= 0:
            bad("power", "must be > 0")
        if self.sparsity_m_by_n is not None:
            m_by_n = tuple(self.sparsity_m_by_n)
            if (len(m_by_n) != 2 or not all(isinstance(v, int) for v in m_by_n)
                    or not 0 < m_by_n[0] < m_by_n[1]):
                bad("sparsity_m_by_n", "must be (zeros, block) integers with 0 < zeros < block, e.g. (2, 4)")
            object.__setattr__(self, "sparsity_m_by_n", m_by_n)
        if isinstance(self.exclude, str):
            bad("exclude", "must be a list of layer names, not a string")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def pruning_schedule(self) -> tfmot.sparsity.keras.PruningSchedule:
        """The toolkit schedule object for this config."""
        if self.schedule == "constant":
            return tfmot.sparsity.keras.ConstantSparsity(
                self.final_sparsity, begin_step=self.begin_step, end_step=self.end_step,
                frequency=self.frequency)
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=self.initial_sparsity, final_sparsity=self.final_sparsity,
            begin_step=self.begin_step, end_step=self.end_step, power=self.power,
            frequency=self.frequency)


def is_prunable(layer: keras.layers.Layer) -> bool:
    """True for layers that hold weights the toolkit prunes (Conv*, Dense, ...)."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return True
    registry = prune_registry.PruneRegistry
    return registry.supports(layer) and bool(registry._LAYERS_WEIGHTS_MAP.get(type(layer)))  # noqa: SLF001


def prunable_layer_names(model: keras.Model, exclude=()) -> list[str]:
    """The layers `prepare_pruning` would wrap; raises if there are none."""
    check_functional(model, TECHNIQUE)
    exclude = check_exclusions(model, exclude, TECHNIQUE)
    return select_layers(model, is_prunable, exclude, TECHNIQUE)


def prepare_pruning(model: keras.Model, config: PruningConfig | None = None) -> Prepared:
    """A copy of `model` with every prunable, non-excluded layer wrapped for pruning.

    Fine-tune it with the returned callbacks (`UpdatePruningStep` advances the
    schedule; without it `fit` fails). Call inside `strategy.scope()` when
    training distributed; compile the returned model afterwards.
    """
    config = config or PruningConfig()
    names = prunable_layer_names(model, config.exclude)
    params = {"pruning_schedule": config.pruning_schedule()}
    if config.sparsity_m_by_n:
        params["sparsity_m_by_n"] = config.sparsity_m_by_n
    pruned = wrap_layers(model, names,
                         lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, **params))
    return Prepared(pruned, [tfmot.sparsity.keras.UpdatePruningStep()])


def strip(model: keras.Model) -> keras.Model:
    """The model without pruning wrappers; the masked (zeroed) weights stay."""
    return tfmot.sparsity.keras.strip_pruning(model)


@dataclass(frozen=True)
class SparsityReport:
    """Fraction of exact zeros per kernel-holding layer, and over all their weights."""

    per_layer: dict[str, float]
    overall: float
    zeros: int
    total: int


def layer_kernels(layer: keras.layers.Layer) -> list[np.ndarray]:
    """A layer's kernel-like weights as arrays, read from the variables.

    Works through pruning and QAT wrappers (which keep the raw kernel
    variable); a clustering wrapper computes its kernel on the fly, so strip
    clustering first.
    """
    if isinstance(layer, cluster_wrapper.ClusterWeights):
        raise CompressionError(f"layer '{layer.name}' is still wrapped for clustering: strip the model first")
    inner = unwrap(layer)
    kernels = []
    for attribute in KERNEL_ATTRIBUTES:
        weight = getattr(inner, attribute, None)
        if weight is None:
            continue
        if not isinstance(weight, tf.Variable):
            # A QAT wrapper replaces the attribute by its fake-quant output; read the variable.
            weight = next((w for w in layer.weights if w.name.endswith(f"{inner.name}/{attribute}:0")), None)
        if weight is not None and len(weight.shape) >= 2:
            kernels.append(np.asarray(keras.backend.get_value(weight)))
    return kernels


def measured_sparsity(model: keras.Model) -> SparsityReport:
    """Count the zeros actually present in every kernel of the model.

    Keys are the inner layer names, so a pruned-and-stripped model and its
    original report under the same names.
    """
    per_layer, zeros, total = {}, 0, 0
    for layer in model.layers:
        kernels = layer_kernels(layer)
        if not kernels:
            continue
        layer_zeros = sum(int(np.sum(k == 0)) for k in kernels)
        layer_total = sum(k.size for k in kernels)
        per_layer[unwrap(layer).name] = layer_zeros / layer_total
        zeros += layer_zeros
        total += layer_total
    return SparsityReport(per_layer, zeros / total if total else 0.0, zeros, total)


def nm_groups(kernel: np.ndarray, m: int) -> np.ndarray:
    """The kernel split into groups of `m` consecutive input-channel weights.

    Matches the toolkit's layout (pruning_utils.weights_rearrange): Dense
    [in, out] -> [out, in]; Conv [h, w, in, out] -> [out*h*w, in]; each row is
    cut into blocks of m from its start, the last block zero-padded.
    Returns shape (rows, blocks, m).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 2:
        rows = kernel.T
    elif kernel.ndim == 4:
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    else:
        raise CompressionError(f"N:M sparsity is defined for rank 2 or 4 kernels, got shape {kernel.shape}")
    pad = (-rows.shape[1]) % m
    rows = np.pad(rows, ((0, 0), (0, pad)))
    return rows.reshape(rows.shape[0], -1, m)


def check_nm_pattern(kernel: np.ndarray, n: int, m: int) -> bool:
    """True when every group of `m` consecutive input-channel weights has at most `n` non-zeros.

    2:4 sparsity is `check_nm_pattern(kernel, 2, 4)`; the toolkit's
    `sparsity_m_by_n=(zeros, block)` corresponds to n = block - zeros, m = block.
    """
    if not 0 < n < m:
        raise CompressionError(f"N:M pattern needs 0 < n < m, got n={n}, m={m}")
    return bool(np.all(np.count_nonzero(nm_groups(kernel, m), axis=-1) <= n))

"""Magnitude pruning (Zhu & Gupta, 2017) applied layer by layer.

Only layers the toolkit can prune (those with a kernel in its registry:
Conv*, Dense, ...) are wrapped; Rescaling, pooling, Flatten and Dropout pass
through untouched. Sparsity is always reported as measured zeros, never as
the number that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # the steps call into this module; it needs them only as types
    from cluster.compression.steps import PruneStep

TECHNIQUE = "prune"
# Attributes holding the weights a layer's sparsity is measured on.
KERNEL_ATTRIBUTES = ("kernel", "pointwise_kernel", "embeddings")


def pruning_schedule(step: PruneStep) -> tfmot.sparsity.keras.PruningSchedule:
    """The toolkit schedule object for a scheduled step (`step.scheduled(total_steps)` fills it in)."""
    if step.end_step is None or step.frequency is None:
        raise CompressionError("the schedule is open: call step.scheduled(total fine-tuning steps) first, "
                               "or give end_step and frequency", step=TECHNIQUE, field="end_step")
    if step.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            step.final_sparsity, begin_step=step.begin_step, end_step=step.end_step, frequency=step.frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=step.initial_sparsity, final_sparsity=step.final_sparsity,
        begin_step=step.begin_step, end_step=step.end_step, power=step.power, frequency=step.frequency)


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


def prepare_pruning(model: keras.Model, step: PruneStep) -> Prepared:
    """A copy of `model` with every prunable, non-excluded layer wrapped for pruning.

    Fine-tune it with the returned callbacks (`UpdatePruningStep` advances the
    schedule; without it `fit` fails). Call inside `strategy.scope()` when
    training distributed; compile the returned model afterwards.
    """
    names = prunable_layer_names(model, step.exclude)
    params = {"pruning_schedule": pruning_schedule(step)}
    if step.sparsity_m_by_n:
        params["sparsity_m_by_n"] = step.sparsity_m_by_n
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

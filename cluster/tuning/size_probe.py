"""A variant's file size before any training: its untrained model, shaped by the pipeline, converted.

A TFLite file's size is fixed by its structure (ops, tensors, the count of
non-zero weights and their bits); training only moves the weights' entropy
under gzip. So the untrained scale, with the pipeline's structure applied
(the student of a distill step, a prune step's zeros, a cluster step's shared
values) and converted as the pipeline converts, gzips to about the trained
file's size. On full Fashion-MNIST the trained files of bncnn w0.28-w1
measured 0.93-1.06x their probe (float, int8, and pruned 50 % + int8), on the
bundled sample 0.98-1.06x (every sweep records its floors, `size_floors`).
`PROBE_FLOOR` leaves room below that: a variant whose probe x PROBE_FLOOR
breaks `max_size_kb` is not worth training for it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np
import tf_keras as keras

from cluster.compression import clustering, pruning, quantization
from cluster.compression.steps import ClusterStep, DistillStep, PruneStep, QATStep, QuantizeStep, conversion
from cluster.models import ModelShape, build_model
from cluster.tuning.space import Scale, Variant

# The least share of its probe a trained file is taken to shrink to (measured 0.93 at worst).
PROBE_FLOOR = 0.85
CALIBRATION_IMAGES = 32


def probe_bytes(scale: Scale, steps, shape: ModelShape, dropout: float | None = None) -> int:
    """gzip bytes of the TFLite file the pipeline makes of the untrained scale.

    Seeds the process's random generators (a fixed init makes the probe repeatable); callers seed
    their own work afterwards, as the jobs do."""
    keras.utils.set_random_seed(0)
    model = build_model(scale.family, shape, scale.width, scale.depth, dropout)
    for step in steps:
        if isinstance(step, DistillStep):
            model = step.build_student(model)
        elif isinstance(step, PruneStep):
            zeros = step.sparsity_m_by_n[0] / step.sparsity_m_by_n[1] if step.sparsity_m_by_n else step.final_sparsity
            for name in pruning.prunable_layer_names(model, step.exclude):
                _zero_smallest(model.get_layer(name), zeros)
        elif isinstance(step, ClusterStep):
            for name in clustering.clusterable_layer_names(model, step):
                _share_values(model.get_layer(name), step.number_of_clusters, step.preserve_sparsity)
    return len(gzip.compress(_convert(model, steps, shape), 9, mtime=0))


def size_floor(scale: Scale, steps, shape: ModelShape, dropout: float | None = None) -> int:
    """Bytes the trained variant's gzipped file is not expected to go below."""
    return int(probe_bytes(scale, steps, shape, dropout) * PROBE_FLOOR)


@dataclass(frozen=True)
class SizePlan:
    floors: dict[str, int]  # variant name -> its size floor in bytes
    too_large: list[Scale]  # scales none of whose variants can fit


def plan_by_size(scales: list[Scale], variants: list[Variant], shape: ModelShape, max_bytes: float,
                 dropout: float | None = None) -> SizePlan:
    """Each variant's size floor, and the scales whose every variant's floor exceeds `max_bytes`."""
    floors = {v.name: size_floor(v.scale, v.pipeline, shape, dropout) for v in variants}
    too_large = [s for s in scales
                 if all(floors[v.name] > max_bytes for v in variants if v.scale == s)]
    return SizePlan(floors, too_large)


def _convert(model: keras.Model, steps, shape: ModelShape) -> bytes:
    mode = conversion(list(steps))
    if mode == "float":
        return quantization.convert_float(model)
    quantizing = next(s for s in steps if isinstance(s, (QATStep, QuantizeStep)))
    # A QAT model converts to the same int8 graph as post-training int8; its ranges do not change the size.
    step = QuantizeStep(mode="int8") if mode == "qat" else quantizing
    pixels = np.random.default_rng(0).uniform(0, 255, (CALIBRATION_IMAGES, *shape.image_shape)).astype(np.float32)
    return quantization.convert_post_training(model, step, lambda: iter([pixels]))


def _kernel(layer: keras.layers.Layer):
    return next(w for w in layer.weights if "kernel" in w.name)


def _zero_smallest(layer: keras.layers.Layer, sparsity: float) -> None:
    kernel = _kernel(layer)
    values = kernel.numpy()
    cut = np.quantile(np.abs(values), sparsity)
    kernel.assign(np.where(np.abs(values) <= cut, 0.0, values))


def _share_values(layer: keras.layers.Layer, clusters: int, keep_zeros: bool) -> None:
    """Each weight moved to the nearest of `clusters` values spread over its range (the toolkit's linear init)."""
    kernel = _kernel(layer)
    values = kernel.numpy()
    centroids = np.linspace(values.min(), values.max(), clusters)
    shared = centroids[np.abs(values[..., None] - centroids).argmin(axis=-1)]
    kernel.assign(np.where(values == 0, 0.0, shared) if keep_zeros else shared)

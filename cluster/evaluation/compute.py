"""How big a model is and how much arithmetic one sample costs.

Conventions (the same for every model, so variants compare fairly):

* `params` counts every weight of the plain layers, trainable or not, like
  `Model.count_params()`. Wrappers (tfmot prune/cluster/quantize wrappers,
  TimeDistributed) are looked through: their bookkeeping variables (pruning
  masks, cluster centroids and indices, quantizer ranges, step counters) are
  not model parameters and are left out. Under a clustering wrapper the
  kernel read is the unclustered one, so strip tfmot wrappers
  (`strip_pruning`, `strip_clustering`) first when the values matter.
* `flops` is multiply-accumulates (MACs) per sample, not 2x MACs. A layer with
  a kernel costs one MAC per kernel weight per output position it is applied
  at: Dense is applied at every position of its input but the last axis, a
  convolution at every output pixel (so strides, padding, dilation and groups
  enter through the output shape and the kernel shape), a transposed
  convolution at every input pixel. Zero padding is counted like real input,
  as im2col kernels do.
* Bias additions, activations, pooling, normalization (folded into the
  preceding convolution on export), reshapes and element-wise ops count 0.
* `flops_sparse` counts only the MACs of non-zero kernel weights: what a
  sparse kernel would execute after pruning.
* A layer with weights but no MAC rule (Embedding, RNNs, ...) adds its
  parameters, counts 0 MACs and is listed in `ComputeProfile.uncounted`, so a
  caller can see the FLOPs are a lower bound.
* A layer (or sub-model) called several times is counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import tf_keras as keras


# Layers whose cost by convention is zero MACs even though they hold weights.
ZERO_MAC_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Normalization,
)

# Layers that hold only toolkit bookkeeping, not model parameters: tfmot's
# input quantizer keeps a range and a step counter. Matched by class name so
# measuring does not import the toolkit.
BOOKKEEPING_LAYERS = frozenset({"QuantizeLayer"})

TRANSPOSED_CONVS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


@dataclass(frozen=True)
class LayerCompute:
    """The cost of one plain layer."""

    name: str
    kind: str
    params: int
    params_nonzero: int
    macs: int
    macs_sparse: int


@dataclass(frozen=True)
class ComputeProfile:
    """The cost of a whole model, with the per-layer breakdown."""

    params: int
    params_nonzero: int
    flops: int
    flops_sparse: int
    layers: tuple[LayerCompute, ...] = field(default=())
    uncounted: tuple[str, ...] = field(default=())


def count_params(model: keras.Model) -> int:
    """Number of weights of the model's plain layers."""
    return compute_profile(model).params


def compute_profile(model: keras.Model) -> ComputeProfile:
    """Parameters and MACs of every plain layer of `model`, summed.

    The model must be built (called on an input) so every layer knows its
    input and output shapes.
    """
    layers = []
    uncounted = []
    for outer, inner in _plain_layers(model):
        if type(inner).__name__ in BOOKKEEPING_LAYERS:
            continue
        cost = _layer_compute(outer, inner)
        if cost is None:
            weights = list(_own_weights(outer, inner).values())
            cost = LayerCompute(inner.name, type(inner).__name__, _size(weights), _nonzero(weights), 0, 0)
            if weights and not isinstance(inner, ZERO_MAC_LAYERS):
                uncounted.append(inner.name)
        layers.append(cost)
    return ComputeProfile(
        params=sum(c.params for c in layers),
        params_nonzero=sum(c.params_nonzero for c in layers),
        flops=sum(c.macs for c in layers),
        flops_sparse=sum(c.macs_sparse for c in layers),
        layers=tuple(layers),
        uncounted=tuple(uncounted),
    )


def _plain_layers(model: keras.Model):
    """Yield (outer, inner) for every leaf layer, descending into sub-models.

    `outer` is the layer as it sits in the graph (it has the shapes), `inner`
    the plain layer under any wrappers (it has the kernel and the config).
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _plain_layers(layer)
            continue
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
        if isinstance(inner, keras.Model):
            yield from _plain_layers(inner)
        else:
            yield layer, inner


def _layer_compute(outer, inner) -> LayerCompute | None:
    """Cost of a layer with a MAC rule, or None when it has none."""
    if isinstance(inner, keras.layers.SeparableConv1D | keras.layers.SeparableConv2D):
        kernel_names = ("depthwise_kernel", "pointwise_kernel")
        positions = _spatial_size(_output_shape(outer), inner.data_format)
    elif isinstance(inner, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
        kernel_names = ("depthwise_kernel",)
        positions = _spatial_size(_output_shape(outer), inner.data_format)
    elif isinstance(inner, TRANSPOSED_CONVS):
        # Each input pixel is scattered through the whole kernel.
        kernel_names = ("kernel",)
        positions = _spatial_size(_input_shape(outer), inner.data_format)
    elif isinstance(inner, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D):
        # The kernel already holds in_channels / groups input channels.
        kernel_names = ("kernel",)
        positions = _spatial_size(_output_shape(outer), inner.data_format)
    elif isinstance(inner, keras.layers.Dense):
        kernel_names = ("kernel",)
        positions = _spatial_size(_output_shape(outer), "channels_last")
    else:
        return None
    weights = _own_weights(outer, inner)
    kernels = [_kernel(outer, inner, weights, name) for name in kernel_names]
    return LayerCompute(
        name=inner.name,
        kind=type(inner).__name__,
        params=_size(weights.values()),
        params_nonzero=_nonzero(weights.values()),
        macs=positions * _size(kernels),
        macs_sparse=positions * _nonzero(kernels),
    )


def _own_weights(outer, inner) -> dict[str, np.ndarray]:
    """The plain layer's own variables by full name, without wrapper bookkeeping.

    tfmot wrappers (prune, cluster, quantize) keep the wrapped layer's
    variables under its name scope ('dense/kernel:0') and their own under
    theirs ('prune_low_magnitude_dense/mask:0'). QAT and clustering wrappers
    also take the kernel off the inner layer, so it is found only here.
    """
    variables = list(inner.weights)
    if outer is not inner:
        scoped = [w for w in outer.weights if w.name.startswith(f"{inner.name}/")]
        # Keras wrappers like TimeDistributed scope the variables by their own name.
        variables = scoped or variables
    return {w.name: np.asarray(w.numpy()) for w in variables}


def _kernel(outer, inner, weights: dict[str, np.ndarray], attribute: str) -> np.ndarray:
    for name, value in weights.items():
        if name.rsplit("/", 1)[-1].split(":")[0] == attribute:
            return value
    kernel = getattr(inner, attribute, None)
    if not hasattr(kernel, "numpy"):
        raise ValueError(f"layer {inner.name!r} (in {type(outer).__name__}): no {attribute} variable found")
    return np.asarray(kernel.numpy())


def _size(arrays) -> int:
    return int(sum(a.size for a in arrays))


def _nonzero(arrays) -> int:
    return int(sum(np.count_nonzero(a) for a in arrays))


def _layer_shape(layer, side: str) -> tuple:
    """The layer's "input" or "output" shape; the model must have been built on an input."""
    try:
        shape = getattr(layer, f"{side}_shape")
    except (AttributeError, RuntimeError) as exc:
        raise ValueError(
            f"layer {layer.name!r} has no known {side} shape; build the model on an input first") from exc
    return _single_shape(layer, shape)


def _output_shape(layer) -> tuple:
    return _layer_shape(layer, "output")


def _input_shape(layer) -> tuple:
    return _layer_shape(layer, "input")


def _single_shape(layer, shape) -> tuple:
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError(f"layer {layer.name!r} has {len(shape)} inputs/outputs; expected one")
        shape = shape[0]
    return tuple(shape)


def _spatial_size(shape: tuple, data_format: str) -> int:
    """Number of positions a kernel is applied at: all axes but batch and channels."""
    axes = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if any(d is None for d in axes):
        raise ValueError(f"FLOPs need static shapes; got {shape}")
    return math.prod(axes)

"""Fold the input `Rescaling` into the first weighted layer, for quantization-aware training.

QAT leaves `Rescaling` unquantized, and the converter then drops it from the
int8 graph: the first conv saw raw 0-255 pixels and the model predicted one
class for every image. Folding the scale into the first layer's kernel gives
the same function with nothing between the input quantizer and that layer,
and the exported model still takes raw pixels.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from cluster.compression.errors import CompressionError

PASS_THROUGH = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.InputLayer)
FOLDABLE = (keras.layers.Conv2D, keras.layers.Dense)


def _is_chain(model: keras.Model) -> bool:
    """Every layer takes exactly the previous layer's output (read from the model's own graph config)."""
    entries = model.get_config()["layers"]
    for previous, entry in zip(entries, entries[1:]):
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != previous["name"]:
            return False
    return True


def fold_input_rescaling(model: keras.Model) -> keras.Model:
    """An equivalent model without the `Rescaling` after the input; the model itself when it has none."""
    layers = model.layers
    index = next((i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Rescaling)), None)
    if index is None:
        return model
    if index != 1 or not _is_chain(model):
        raise CompressionError("QAT folds the input Rescaling into the first layer; this needs a model that "
                               "is a plain chain of layers starting with it", step="qat", field="model")
    rescale = layers[index]
    target = next((layer for layer in layers[index + 1:] if not isinstance(layer, PASS_THROUGH)), None)
    if not isinstance(target, FOLDABLE):
        raise CompressionError(f"the layer after Rescaling is {type(target).__name__}, not Conv2D or Dense",
                               step="qat", field="model")
    offset = np.asarray(rescale.offset, np.float32)
    if np.any(offset != 0) and isinstance(target, keras.layers.Conv2D) and target.padding != "valid":
        raise CompressionError("a Rescaling offset cannot be folded into a zero-padded conv", step="qat",
                               field="model")

    inputs = keras.Input(shape=model.input_shape[1:], name=model.layers[0].name)
    x = inputs
    for layer in layers[index + 1:]:
        x = layer.__class__.from_config(layer.get_config())(x)
    folded = keras.Model(inputs, x, name=model.name)
    for source in layers[index + 1:]:
        copy = folded.get_layer(source.name)
        weights = source.get_weights()
        if source is target:
            kernel, bias = weights[0], weights[1] if len(weights) > 1 else None
            scale = np.asarray(rescale.scale, np.float32)
            weights[0] = kernel * scale
            if bias is not None and np.any(offset != 0):
                weights[1] = bias + offset * kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
        copy.set_weights(weights)
    return folded

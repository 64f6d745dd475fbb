"""Layer-by-layer model rewriting shared by pruning, clustering and QAT.

The toolkit's whole-model entry points fail on models that hold a
`Rescaling` layer, so every technique here clones the model and wraps only
the layers it supports, passing the others through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import tf_keras as keras

from cluster.compression.errors import CompressionError


def unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The innermost layer under any toolkit wrappers (prune, cluster, quantize)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def describe_layers(model: keras.Model) -> str:
    """'name (Class), ...' for error messages."""
    return ", ".join(f"{layer.name} ({type(unwrap(layer)).__name__})" for layer in model.layers)


def check_functional(model: keras.Model, technique: str) -> None:
    """Cloning layer by layer needs a Sequential or functional model."""
    if not isinstance(model, keras.Model):
        raise CompressionError(f"{technique} needs a tf_keras Model, got {type(model).__name__}",
                               step=technique)
    if not (isinstance(model, keras.Sequential) or model._is_graph_network):  # noqa: SLF001
        raise CompressionError(f"{technique} supports Sequential and functional models only, "
                               f"not the subclassed model '{model.name}'", step=technique)


def check_exclusions(model: keras.Model, exclude: Iterable[str], technique: str) -> frozenset[str]:
    """Exclusions must name layers of the model: a typo would silently compress the layer."""
    exclude = frozenset(exclude)
    names = {layer.name for layer in model.layers}
    unknown = sorted(exclude - names)
    if unknown:
        raise CompressionError(f"excluded layer(s) {unknown} not in model '{model.name}'; "
                               f"its layers: {describe_layers(model)}",
                               step=technique, field="exclude")
    return exclude


def select_layers(model: keras.Model, supported: Callable[[keras.layers.Layer], bool],
                  exclude: frozenset[str], technique: str) -> list[str]:
    """Names of the layers the technique will wrap; an error when there are none."""
    chosen = [layer.name for layer in model.layers
              if layer.name not in exclude and supported(layer)]
    if not chosen:
        raise CompressionError(f"model '{model.name}' has no layer that {technique} supports "
                               f"(excluded: {sorted(exclude) or 'none'}); "
                               f"its layers: {describe_layers(model)}", step=technique)
    return chosen


def clone_with_weights(model: keras.Model) -> keras.Model:
    """A fresh copy, so fine-tuning the compressed model never moves the original's weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def wrap_layers(model: keras.Model, names: Iterable[str],
                wrap: Callable[[keras.layers.Layer], keras.layers.Layer]) -> keras.Model:
    """Clone `model`, replacing each layer named in `names` by `wrap(layer)`.

    Wrapped layers are the (already built, weight-carrying) layers of a private
    copy, so wrappers that read weights when built (clustering centroids,
    sparsity masks) see the trained values. Creates variables: call it inside
    `strategy.scope()` when training distributed.
    """
    names = frozenset(names)
    copy = clone_with_weights(model)

    def clone_function(layer):
        return wrap(layer) if layer.name in names else layer

    return keras.models.clone_model(copy, input_tensors=None, clone_function=clone_function)

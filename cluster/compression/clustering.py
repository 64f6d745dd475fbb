"""Weight clustering (weight sharing): each clustered kernel keeps at most k distinct values.

Applied layer by layer like pruning; layers without clusterable weights
(Rescaling, pooling, Flatten, Dropout) pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

from cluster.compression.errors import CompressionError
from cluster.compression.layers import (check_exclusions, check_functional, select_layers,
                                        unwrap, wrap_layers)
from cluster.compression.prepared import Prepared
from cluster.compression.pruning import layer_kernels

TECHNIQUE = "cluster"
CentroidInit = tfmot.clustering.keras.CentroidInitialization
CENTROID_INITS = {
    "linear": CentroidInit.LINEAR,
    "kmeans_plus_plus": CentroidInit.KMEANS_PLUS_PLUS,
    "density_based": CentroidInit.DENSITY_BASED,
    "random": CentroidInit.RANDOM,
}


@dataclass(frozen=True)
class ClusteringConfig:
    """`number_of_clusters` shared values per kernel, centroids initialized by `centroid_init`.

    `preserve_sparsity` keeps the zeros of an already pruned model at zero.
    """

    number_of_clusters: int = 16
    centroid_init: str = "kmeans_plus_plus"
    preserve_sparsity: bool = False
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        k = self.number_of_clusters
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise CompressionError(f"must be an integer >= 2 (got {k!r})",
                                   step=TECHNIQUE, field="number_of_clusters")
        if self.centroid_init not in CENTROID_INITS:
            raise CompressionError(f"must be one of {sorted(CENTROID_INITS)} (got {self.centroid_init!r})",
                                   step=TECHNIQUE, field="centroid_init")
        if not isinstance(self.preserve_sparsity, bool):
            raise CompressionError(f"must be true or false (got {self.preserve_sparsity!r})",
                                   step=TECHNIQUE, field="preserve_sparsity")
        if isinstance(self.exclude, str):
            raise CompressionError("must be a list of layer names, not a string",
                                   step=TECHNIQUE, field="exclude")
        object.__setattr__(self, "exclude", tuple(self.exclude))


def is_clusterable(layer: keras.layers.Layer, number_of_clusters: int = 2) -> bool:
    """Layers with weights the toolkit clusters, and more of them than clusters.

    (The toolkit silently skips a Conv2D with too few weights; we skip any such
    layer, since k clusters of <= k weights compress nothing.)
    """
    if isinstance(layer, tfmot.clustering.keras.ClusterableLayer):
        return True
    weight_names = clustering_registry.ClusteringRegistry._LAYERS_WEIGHTS_MAP.get(type(layer))  # noqa: SLF001
    if not weight_names:
        return False
    return all(getattr(layer, name).shape.num_elements() > number_of_clusters for name in weight_names)


def clusterable_layer_names(model: keras.Model, config: ClusteringConfig) -> list[str]:
    """The layers `prepare_clustering` would wrap; raises if there are none."""
    check_functional(model, TECHNIQUE)
    exclude = check_exclusions(model, config.exclude, TECHNIQUE)
    return select_layers(model, lambda layer: is_clusterable(layer, config.number_of_clusters),
                         exclude, TECHNIQUE)


def prepare_clustering(model: keras.Model, config: ClusteringConfig | None = None) -> Prepared:
    """A copy of `model` with clusterable layers wrapped; centroids start from its trained weights.

    Needs no callbacks. Call inside `strategy.scope()` when training
    distributed; compile afterwards (a lower learning rate suits clustering).
    """
    config = config or ClusteringConfig()
    names = clusterable_layer_names(model, config)
    params = {
        "number_of_clusters": config.number_of_clusters,
        "cluster_centroids_init": CENTROID_INITS[config.centroid_init],
        "preserve_sparsity": config.preserve_sparsity,
    }
    clustered = wrap_layers(model, names,
                            lambda layer: tfmot.clustering.keras.cluster_weights(layer, **params))
    return Prepared(clustered, [])


def strip(model: keras.Model) -> keras.Model:
    """The model without clustering wrappers; kernels hold the shared (centroid) values."""
    return tfmot.clustering.keras.strip_clustering(model)


def unique_values_per_layer(model: keras.Model) -> dict[str, int]:
    """Distinct values in each layer's kernel(s), by inner layer name."""
    counts = {}
    for layer in model.layers:
        kernels = layer_kernels(layer)
        if kernels:
            counts[unwrap(layer).name] = int(np.unique(np.concatenate([k.ravel() for k in kernels])).size)
    return counts

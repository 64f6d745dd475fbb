"""Weight clustering (weight sharing): each clustered kernel keeps at most k distinct values.

Applied layer by layer like pruning; layers without clusterable weights
(Rescaling, pooling, Flatten, Dropout) pass through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

from cluster.compression.layers import check_exclusions, check_functional, select_layers, wrap_layers
from cluster.compression.prepared import Prepared

if TYPE_CHECKING:  # the steps call into this module; it needs them only as types
    from cluster.compression.steps import ClusterStep

TECHNIQUE = "cluster"
CentroidInit = tfmot.clustering.keras.CentroidInitialization
CENTROID_INITS = {
    "linear": CentroidInit.LINEAR,
    "kmeans_plus_plus": CentroidInit.KMEANS_PLUS_PLUS,
    "density_based": CentroidInit.DENSITY_BASED,
    "random": CentroidInit.RANDOM,
}


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


def clusterable_layer_names(model: keras.Model, step: ClusterStep) -> list[str]:
    """The layers `prepare_clustering` would wrap; raises if there are none."""
    check_functional(model, TECHNIQUE)
    exclude = check_exclusions(model, step.exclude, TECHNIQUE)
    return select_layers(model, lambda layer: is_clusterable(layer, step.number_of_clusters),
                         exclude, TECHNIQUE)


def prepare_clustering(model: keras.Model, step: ClusterStep) -> Prepared:
    """A copy of `model` with clusterable layers wrapped; centroids start from its trained weights.

    Needs no callbacks. Call inside `strategy.scope()` when training
    distributed; compile afterwards (a lower learning rate suits clustering).
    """
    names = clusterable_layer_names(model, step)
    params = {
        "number_of_clusters": step.number_of_clusters,
        "cluster_centroids_init": CENTROID_INITS[step.centroid_init],
        "preserve_sparsity": step.preserve_sparsity,
    }
    clustered = wrap_layers(model, names,
                            lambda layer: tfmot.clustering.keras.cluster_weights(layer, **params))
    return Prepared(clustered, [])


def strip(model: keras.Model) -> keras.Model:
    """The model without clustering wrappers; kernels hold the shared (centroid) values."""
    return tfmot.clustering.keras.strip_clustering(model)

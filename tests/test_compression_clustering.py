"""Clustering: at most k distinct values per clustered kernel after strip; cluster-preserving QAT."""

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
from pydantic import ValidationError
import tensorflow as tf
import tf_keras as keras

from cluster.compression import clustering, quantization
from cluster.compression.errors import CompressionError
from cluster.compression.steps import ClusterStep, QATStep

from tests.compression_helpers import SHAPE, random_data, tiny_cnn, unique_values_per_layer  # noqa: F401


def fine_tune(prepared, epochs=1):
    prepared.model.compile(keras.optimizers.Adam(1e-3),
                           keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data()
    prepared.model.fit(x, y, batch_size=32, epochs=epochs, callbacks=prepared.callbacks, verbose=0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("init", ["linear", "kmeans_plus_plus", "density_based", "random"])
def test_clustered_layers_keep_at_most_k_values(init):
    model = tiny_cnn()
    config = ClusterStep(number_of_clusters=8, centroid_init=init, exclude=["logits"])
    prepared = clustering.prepare_clustering(model, config)
    wrapped = sorted(layer.name for layer in prepared.model.layers if layer.name.startswith("cluster_"))
    assert wrapped == ["cluster_conv1", "cluster_conv2", "cluster_dense1"]
    fine_tune(prepared)
    stripped = clustering.strip(prepared.model)
    counts = unique_values_per_layer(stripped)
    for name in ("conv1", "conv2", "dense1"):
        assert counts[name] <= 8, (name, counts)
    # Excluded layer keeps its many distinct float values; Rescaling passes through.
    assert counts["logits"] > 100
    assert type(stripped.get_layer("rescale")) is keras.layers.Rescaling
    # The stripped model is an ordinary model of the same architecture.
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in model.layers]


@pytest.mark.timeout(120)
def test_cluster_preserving_qat_keeps_the_clusters_in_the_int8_model():
    prepared = clustering.prepare_clustering(tiny_cnn(), ClusterStep(number_of_clusters=4))
    fine_tune(prepared)
    stripped = clustering.strip(prepared.model)
    assert unique_values_per_layer(stripped)["dense1"] <= 4

    qat = quantization.prepare_qat(stripped, QATStep(preserve="clusters"))
    fine_tune(qat)
    it = tf.lite.Interpreter(model_content=quantization.convert_qat(qat.model))
    (dense1,) = [d for d in it.get_tensor_details() if tuple(d["shape"]) == (32, 784)]
    assert dense1["dtype"] == np.int8
    # Dense kernels are quantized per tensor: 4 centroids -> at most 4 int8 values.
    assert np.unique(it.get_tensor(dense1["index"])).size <= 4


@pytest.mark.timeout(30)
def test_unique_values_needs_a_stripped_model():
    prepared = clustering.prepare_clustering(tiny_cnn(), ClusterStep(number_of_clusters=4))
    with pytest.raises(CompressionError, match="strip"):
        unique_values_per_layer(prepared.model)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field, value", [
    ("number_of_clusters", 1), ("number_of_clusters", 0), ("number_of_clusters", 2.5),
    ("centroid_init", "spectral"), ("exclude", "logits"),
])
def test_bad_clustering_parameters_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        ClusterStep(**{field: value})


@pytest.mark.timeout(30)
def test_model_without_clusterable_layers_is_rejected():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    weightless = keras.Model(inputs, keras.layers.MaxPooling2D(name="pool")(x), name="weightless")
    with pytest.raises(CompressionError, match=r"no layer that cluster supports.*rescale \(Rescaling\), pool"):
        clustering.prepare_clustering(weightless, ClusterStep())

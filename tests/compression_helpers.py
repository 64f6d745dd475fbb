"""Small models and data shared by the compression tests."""

import numpy as np
import tf_keras as keras

from cluster.models import ModelShape, build_model

SHAPE = ModelShape((28, 28, 1), 10)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return build_model("cnn", SHAPE, width=0.25)


def random_data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n)


def unique_values_per_layer(model: keras.Model) -> dict[str, int]:
    """Distinct values in each layer's kernel(s), by inner layer name (strip clustering first)."""
    from cluster.compression.layers import unwrap
    from cluster.compression.pruning import layer_kernels

    counts = {}
    for layer in model.layers:
        kernels = layer_kernels(layer)
        if kernels:
            counts[unwrap(layer).name] = int(np.unique(np.concatenate([k.ravel() for k in kernels])).size)
    return counts

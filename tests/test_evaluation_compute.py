"""Parameter, non-zero and MAC counts against hand counts; file sizes."""

import gzip
import subprocess

import numpy as np
import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tf_keras as keras

from cluster.evaluation import compute, files
from cluster.evaluation.errors import ArtifactError


def dense_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, activation="relu", name="d1")(inputs)
    outputs = keras.layers.Dense(3, name="d2")(x)
    return keras.Model(inputs, outputs)


def conv_model():
    inputs = keras.Input((9, 9, 2))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c_same")(x)  # -> 5x5x4
    x = keras.layers.Conv2D(3, 3, padding="valid", activation="relu", name="c_valid")(x)  # -> 3x3x3
    x = keras.layers.Conv2D(6, 1, groups=3, name="c_grouped")(x)  # -> 3x3x6
    x = keras.layers.MaxPooling2D(1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.timeout(60)
def test_dense_model_matches_hand_count():
    profile = compute.compute_profile(dense_model())
    # Dense 6->4: 6*4 = 24 MACs; Dense 4->3: 4*3 = 12 MACs. Biases are free.
    assert profile.flops == 6 * 4 + 4 * 3 == 36
    # Weights: (6*4 + 4) + (4*3 + 3) = 28 + 15 = 43.
    assert profile.params == (6 * 4 + 4) + (4 * 3 + 3) == 43
    assert profile.params == dense_model().count_params()
    assert profile.uncounted == ()


@pytest.mark.timeout(60)
def test_dense_on_sequence_counts_every_position():
    inputs = keras.Input((5, 6))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    # Applied at each of the 5 positions: 5 * 6*4 = 120.
    assert compute.compute_profile(model).flops == 5 * 6 * 4 == 120


@pytest.mark.timeout(60)
def test_conv_model_matches_hand_count():
    profile = compute.compute_profile(conv_model())
    by_name = {layer.name: layer.macs for layer in profile.layers}
    # 'same', stride 2 on 9x9: ceil(9/2) = 5 -> 5*5 positions * 4 filters * (3*3*2) = 1800
    assert by_name["c_same"] == 5 * 5 * 4 * (3 * 3 * 2) == 1800
    # 'valid' 3x3 on 5x5: 5-3+1 = 3 -> 3*3 positions * 3 filters * (3*3*4) = 972
    assert by_name["c_valid"] == 3 * 3 * 3 * (3 * 3 * 4) == 972
    # 1x1, 3 groups: each filter sees 3/3 = 1 channel -> 3*3 * 6 * (1*1*1) = 54
    assert by_name["c_grouped"] == 3 * 3 * 6 * (1 * 1 * 3 // 3) == 54
    # Pooling counts 0; Dense 6->2 = 12.
    assert by_name["head"] == 6 * 2 == 12
    assert profile.flops == 1800 + 972 + 54 + 12 == 2838
    assert profile.params == conv_model().count_params()


@pytest.mark.timeout(60)
def test_depthwise_and_separable_match_hand_count():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, name="dw")(inputs)  # -> 3x3x6
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)  # -> 3x3x4
    profile = compute.compute_profile(keras.Model(inputs, x))
    by_name = {layer.name: layer.macs for layer in profile.layers}
    # 'valid' stride 2 on 8: (8-3)//2 + 1 = 3 -> 3*3 positions * 6 channels * 3*3 taps = 486
    assert by_name["dw"] == 3 * 3 * 6 * (3 * 3) == 486
    # depthwise 3*3 * 6 * 3*3 = 486, pointwise 3*3 * 6 * 4 = 216
    assert by_name["sep"] == 3 * 3 * 6 * 9 + 3 * 3 * 6 * 4 == 702


@pytest.mark.timeout(60)
def test_nested_submodel_is_counted():
    inner = conv_model()
    inputs = keras.Input((9, 9, 2))
    outputs = keras.layers.Dense(5, name="outer_head")(inner(inputs))
    profile = compute.compute_profile(keras.Model(inputs, outputs))
    assert profile.flops == 2838 + 2 * 5
    assert profile.params == inner.count_params() + (2 * 5 + 5)


@pytest.mark.timeout(60)
def test_zeroed_weights_reduce_nonzero_and_sparse_macs():
    model = dense_model()
    layer = model.get_layer("d1")
    kernel, bias = layer.get_weights()
    kernel[:3, :] = 0.0  # 3 rows of 4 = 12 of the 24 kernel weights
    bias[:] = [0.5, 0.0, 0.0, 0.0]  # 1 non-zero bias
    layer.set_weights([kernel, bias])
    head_kernel, head_bias = model.get_layer("d2").get_weights()
    expected_nonzero = (24 - 12) + 1 + np.count_nonzero(head_kernel) + np.count_nonzero(head_bias)

    profile = compute.compute_profile(model)
    assert profile.params == 43
    assert profile.params_nonzero == expected_nonzero
    assert profile.flops == 36  # dense count ignores zeros
    assert profile.flops_sparse == (24 - 12) + np.count_nonzero(head_kernel)


@pytest.mark.timeout(60)
def test_toolkit_wrappers_are_looked_through():
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    wrapped_models = {
        "pruned": tfmot.sparsity.keras.prune_low_magnitude(dense_model()),
        "clustered": clustering.cluster_weights(
            dense_model(), number_of_clusters=3,
            cluster_centroids_init=clustering.CentroidInitialization.LINEAR),
        "qat": tfmot.quantization.keras.quantize_model(dense_model()),
    }
    for kind, model in wrapped_models.items():
        profile = compute.compute_profile(model)
        # Masks, centroids, quantizer ranges and step counters are not parameters.
        assert (profile.params, profile.flops, profile.uncounted) == (43, 36, ()), kind


@pytest.mark.timeout(60)
def test_time_distributed_dense_counts_every_step():
    inputs = keras.Input((3, 5))
    model = keras.Model(inputs, keras.layers.TimeDistributed(keras.layers.Dense(2))(inputs))
    profile = compute.compute_profile(model)
    assert (profile.params, profile.flops) == (5 * 2 + 2, 3 * 5 * 2)


@pytest.mark.timeout(60)
def test_layers_without_mac_rule_are_listed():
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 3, name="embed")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    profile = compute.compute_profile(keras.Model(inputs, x))
    assert profile.uncounted == ("embed",)  # batch norm is 0 by convention, not unknown
    assert profile.params == 10 * 3 + 4 * 3


@pytest.mark.timeout(60)
def test_sizes_match_python_gzip_and_gzip_command(tmp_path):
    from cluster.evaluation.export import export_tflite
    from cluster.models import ModelShape, build_model

    # A real artifact: what the metric is for.
    path = export_tflite(build_model("cnn", ModelShape((28, 28, 1), 10), width=0.25), tmp_path / "m.tflite")
    data = path.read_bytes()
    assert files.size_bytes(path) == len(data)
    size = files.gzip_size_bytes(path, chunk_size=4096)  # streamed in chunks
    assert size == len(gzip.compress(data, compresslevel=9, mtime=0))

    gnu = subprocess.run(f"gzip -9 -n -c '{path}' | wc -c", shell=True, check=True,
                         capture_output=True, text=True)
    # GNU gzip has its own deflate: same format and level, not byte-identical
    # (within 0.2% on TFLite files; synthetic data can differ by ~2%).
    assert abs(size - int(gnu.stdout)) <= 0.01 * size


@pytest.mark.timeout(60)
def test_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ArtifactError, match="nope.tflite"):
        files.size_bytes(missing)
    with pytest.raises(ArtifactError, match="nope.tflite"):
        files.gzip_size_bytes(missing)

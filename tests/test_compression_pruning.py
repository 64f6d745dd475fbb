"""Pruning: measured sparsity after fine-tuning, the N:M pattern, exclusions, pass-through layers."""

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
from pydantic import ValidationError
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

from cluster.compression import pruning
from cluster.compression.errors import CompressionError
from cluster.compression.steps import PruneStep
from cluster.models import ModelShape, build_model

SHAPE = ModelShape((28, 28, 1), 10)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return build_model("cnn", SHAPE, width=0.25)


def random_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n)


def fine_tune(prepared, epochs=2):
    prepared.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data()
    prepared.model.fit(x, y, batch_size=32, epochs=epochs, callbacks=prepared.callbacks, verbose=0)


@pytest.mark.timeout(120)
def test_polynomial_decay_reaches_target_and_leaves_the_rest_alone():
    model = tiny_cnn()
    original = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    # 256 images / 32 = 8 steps an epoch: ramp 0 -> 0.75 over the first epoch.
    config = PruneStep(final_sparsity=0.75, initial_sparsity=0.0, begin_step=0,
                       end_step=8, frequency=2, exclude=("logits",))
    prepared = pruning.prepare_pruning(model, config)
    wrapped = [layer.name for layer in prepared.model.layers if layer.name.startswith("prune_low_magnitude")]
    assert sorted(wrapped) == ["prune_low_magnitude_conv1", "prune_low_magnitude_conv2",
                               "prune_low_magnitude_dense1"]
    fine_tune(prepared)
    stripped = pruning.strip(prepared.model)

    report = pruning.measured_sparsity(stripped)
    for name in ("conv1", "conv2", "dense1"):
        assert report.per_layer[name] >= 0.75 - 0.01, (name, report.per_layer)
    # Excluded layer: never pruned, but fine-tuned like any other layer.
    assert report.per_layer["logits"] < 0.05
    # Rescaling and the weightless layers pass through as themselves.
    layers = {layer.name: layer for layer in stripped.layers}
    assert type(layers["rescale"]) is keras.layers.Rescaling
    assert layers["rescale"].scale == pytest.approx(1 / 255)
    for name, kind in [("pool1", keras.layers.MaxPooling2D), ("flatten", keras.layers.Flatten),
                       ("dropout1", keras.layers.Dropout)]:
        assert type(layers[name]) is kind
    # The original model is a separate copy: fine-tuning did not touch it.
    for layer in model.layers:
        for before, after in zip(original[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(before, after)
    # Overall is the weighted zero count, not the requested number.
    assert report.overall == pytest.approx(report.zeros / report.total)


@pytest.mark.timeout(120)
def test_two_four_structured_sparsity_holds_in_every_group():
    model = tiny_cnn(1)
    prepared = pruning.prepare_pruning(model, PruneStep(sparsity_m_by_n=(2, 4), exclude=["logits"]).scheduled(100))
    fine_tune(prepared, epochs=1)
    stripped = pruning.strip(prepared.model)
    for name in ("conv1", "conv2", "dense1"):
        (kernel,) = pruning.layer_kernels(stripped.get_layer(name))
        assert pruning.check_nm_pattern(kernel, 2, 4), name
        # Same verdict as the toolkit's own checker (TFLite layout, C_OUT last in TF).
        assert pruning_utils.is_pruned_m_by_n(tf.constant(kernel), (2, 4), "C_OUT"), name
    report = pruning.measured_sparsity(stripped)
    # Input channels a multiple of 4: exactly half the weights are zero.
    assert report.per_layer["conv2"] == pytest.approx(0.5)
    assert report.per_layer["dense1"] == pytest.approx(0.5)
    assert not pruning.check_nm_pattern(stripped.get_layer("logits").kernel.numpy(), 2, 4)


@pytest.mark.timeout(30)
def test_nm_groups_run_along_the_input_channel_axis():
    # Dense kernel [in=4, out=2]: output unit 0 has 3 non-zeros among its 4 inputs.
    dense = np.array([[1, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    assert not pruning.check_nm_pattern(dense, 2, 4)
    # Its transpose breaks no input-channel group: each row of inputs groups 2 values.
    assert pruning.check_nm_pattern(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32).T, 2, 4)
    # Conv [h, w, in, out]: 4 consecutive input channels at one tap, all non-zero.
    conv = np.zeros((3, 3, 8, 2), np.float32)
    conv[1, 1, 4:8, 0] = 1.0
    assert not pruning.check_nm_pattern(conv, 2, 4)
    conv[1, 1, 6:8, 0] = 0.0
    conv[0, 0, 0:8:4, :] = 1.0  # spread across groups: fine
    assert pruning.check_nm_pattern(conv, 2, 4)
    # Agrees with the toolkit on masks the toolkit itself generates and on random ones.
    rng = np.random.default_rng(0)
    for shape in [(12, 5), (3, 3, 6, 4), (3, 3, 8, 3)]:
        weights = tf.constant(rng.normal(size=shape).astype(np.float32))
        rearranged = pruning_utils.weights_rearrange(weights)
        mask = pruning_utils.m_by_n_sparsity_mask_prepare(
            pruning_utils.generate_m_by_n_mask(rearranged, (2, 4)), weights.shape)
        masked = (weights * mask).numpy()
        assert pruning.check_nm_pattern(masked, 2, 4)
        assert pruning_utils.is_pruned_m_by_n(tf.constant(masked), (2, 4)) is True
        dense_random = rng.normal(size=shape).astype(np.float32)
        assert pruning.check_nm_pattern(dense_random, 2, 4) == pruning_utils.is_pruned_m_by_n(
            tf.constant(dense_random), (2, 4))


@pytest.mark.timeout(30)
def test_measured_sparsity_counts_actual_zeros():
    model = tiny_cnn()
    kernel = model.get_layer("dense1").kernel
    values = kernel.numpy()
    values.flat[: values.size // 4] = 0.0
    kernel.assign(values)
    report = pruning.measured_sparsity(model)
    assert report.per_layer["dense1"] == pytest.approx((values.size // 4) / values.size, abs=1e-6)
    assert report.per_layer["conv1"] == 0.0
    assert set(report.per_layer) == {"conv1", "conv2", "dense1", "logits"}


@pytest.mark.timeout(60)
def test_prepare_inside_a_strategy_scope_trains():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        prepared = pruning.prepare_pruning(tiny_cnn(), PruneStep(
            final_sparsity=0.5, schedule="constant", begin_step=0, end_step=-1, frequency=1))
        prepared.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data(64)
    prepared.model.fit(x, y, batch_size=32, epochs=1, callbacks=prepared.callbacks, verbose=0)
    report = pruning.measured_sparsity(pruning.strip(prepared.model))
    assert report.per_layer["dense1"] >= 0.49


@pytest.mark.parametrize("field, value", [
    ("final_sparsity", 1.0), ("final_sparsity", -0.1), ("initial_sparsity", 1.5),
    ("end_step", 0), ("frequency", 0), ("schedule", "cubic"), ("sparsity_m_by_n", (4, 4)),
    ("sparsity_m_by_n", (2,)),
])
@pytest.mark.timeout(10)
def test_bad_pruning_parameters_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        PruneStep(**{field: value})


@pytest.mark.timeout(30)
def test_unknown_exclusion_and_unprunable_model_are_rejected():
    with pytest.raises(CompressionError, match=r"field 'exclude'.*\['head'\].*logits \(Dense\)"):
        pruning.prepare_pruning(tiny_cnn(), PruneStep(exclude=["head"]))
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Flatten(name="flat")(keras.layers.Rescaling(1 / 255, name="rescale")(inputs))
    weightless = keras.Model(inputs, outputs, name="weightless")
    with pytest.raises(CompressionError, match=r"no layer that prune supports.*rescale \(Rescaling\).*flat"):
        pruning.prepare_pruning(weightless, PruneStep())
    with pytest.raises(CompressionError, match="no layer that prune supports"):
        pruning.prepare_pruning(tiny_cnn(), PruneStep(
            exclude=["conv1", "conv2", "dense1", "logits"]))

"""Quantization: post-training flatbuffers hold the promised weight types; QAT trains and converts."""

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
from pydantic import ValidationError
import tensorflow as tf
import tf_keras as keras

from cluster.compression import pruning, quantization
from cluster.compression.errors import CompressionError
from cluster.compression.steps import PruneStep, QATStep, QuantizeStep

from tests.compression_helpers import SHAPE, random_data, tiny_cnn  # noqa: F401
KERNEL_SHAPES = {"conv1": (8, 3, 3, 1), "conv2": (16, 3, 3, 8), "dense1": (32, 784), "logits": (10, 32)}


def representative_data():
    images, _ = random_data(64, seed=1)
    for start in range(0, 64, 8):
        yield images[start:start + 8]


def interpreter(flatbuffer):
    it = tf.lite.Interpreter(model_content=flatbuffer)
    it.allocate_tensors()
    return it


def kernel_tensors(it):
    """TFLite tensors holding the conv/dense kernels (TFLite layout: out channels first)."""
    details = it.get_tensor_details()
    return {name: [d for d in details if tuple(d["shape"]) == shape]
            for name, shape in KERNEL_SHAPES.items()}


def run(it, images):
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    if inp["dtype"] != np.float32:
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        images = np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(inp["dtype"])
    it.set_tensor(inp["index"], images)
    it.invoke()
    return it.get_tensor(out["index"])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("io_type, dtype", [("int8", np.int8), ("uint8", np.uint8), ("float32", np.float32)])
def test_full_integer_flatbuffer_holds_int8_weights(io_type, dtype):
    flatbuffer = quantization.convert_int8(tiny_cnn(), representative_data, io_type, io_type)
    it = interpreter(flatbuffer)
    for name, tensors in kernel_tensors(it).items():
        assert tensors and all(t["dtype"] == np.int8 for t in tensors), name
    assert it.get_input_details()[0]["dtype"] == dtype
    assert it.get_output_details()[0]["dtype"] == dtype
    assert run(it, random_data(1)[0]).shape == (1, 10)


@pytest.mark.timeout(60)
def test_float16_flatbuffer_holds_float16_weights():
    model = tiny_cnn()
    it = interpreter(quantization.convert_float16(model))
    for name, tensors in kernel_tensors(it).items():
        assert any(t["dtype"] == np.float16 for t in tensors), name
        assert not any(t["dtype"] == np.int8 for t in tensors), name
    # Computation stays float: the float16 weights are dequantized, outputs close to Keras.
    images = random_data(1)[0]
    np.testing.assert_allclose(run(it, images), model(images).numpy(), atol=0.05)


@pytest.mark.timeout(60)
def test_dynamic_range_has_int8_weights_and_float_io():
    it = interpreter(quantization.convert_dynamic_range(tiny_cnn()))
    # Tiny kernels (conv1: 72 weights) stay float: the converter skips them as not worth it.
    assert all(t["dtype"] == np.int8 for t in kernel_tensors(it)["dense1"])
    assert it.get_input_details()[0]["dtype"] == np.float32
    float_size = len(quantization.convert_float(tiny_cnn()))
    assert len(quantization.convert_dynamic_range(tiny_cnn())) < float_size / 2


@pytest.mark.timeout(120)
def test_qat_model_trains_and_converts_to_int8():
    model = tiny_cnn()
    prepared = quantization.prepare_qat(model, QATStep())
    names = [layer.name for layer in prepared.model.layers]
    # The input Rescaling is folded into conv1 (the converter would drop it); everything else quantized.
    assert "quant_rescale" not in names and "quant_conv1" in names and "quant_logits" in names
    prepared.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data()
    history = prepared.model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    it = interpreter(quantization.convert_qat(prepared.model, "float32", "float32"))
    for name, tensors in kernel_tensors(it).items():
        assert tensors and all(t["dtype"] == np.int8 for t in tensors), name
    # The int8 graph computes what the QAT model computes on raw pixels (up to quantization error).
    keras_logits = prepared.model.predict(x[:64], verbose=0)
    tflite_logits = np.concatenate([run(it, x[i:i + 1]) for i in range(64)])
    assert (keras_logits.argmax(1) == tflite_logits.argmax(1)).mean() >= 0.9
    it = interpreter(quantization.convert_qat(prepared.model))
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_input_details()[0]["quantization"][0] > 0  # input range learned in QAT


@pytest.mark.timeout(120)
def test_prune_preserving_qat_keeps_zeros():
    # Prune to 2:4, strip, then QAT with sparsity preservation.
    pruned = pruning.prepare_pruning(tiny_cnn(), PruneStep(sparsity_m_by_n=(2, 4), exclude=["logits"]).scheduled(100))
    pruned.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data()
    pruned.model.fit(x, y, batch_size=32, epochs=1, callbacks=pruned.callbacks, verbose=0)
    stripped = pruning.strip(pruned.model)
    zeros_before = stripped.get_layer("dense1").kernel.numpy() == 0
    assert zeros_before.mean() == pytest.approx(0.5)

    prepared = quantization.prepare_qat(stripped, QATStep(preserve="sparsity"))
    prepared.model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    prepared.model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    (kernel_after,) = pruning.layer_kernels(prepared.model.get_layer("quant_dense1"))
    assert np.all(kernel_after[zeros_before] == 0)

    it = interpreter(quantization.convert_qat(prepared.model))
    (dense1,) = kernel_tensors(it)["dense1"]
    int8_kernel = it.get_tensor(dense1["index"])  # TFLite layout [out, in]
    assert dense1["dtype"] == np.int8
    assert np.all(int8_kernel.T[zeros_before] == 0)
    assert pruning.check_nm_pattern(int8_kernel.T, 2, 4)


@pytest.mark.timeout(30)
def test_bad_quantization_input_is_rejected():
    with pytest.raises(CompressionError, match="field 'input_type'"):
        quantization.convert_int8(tiny_cnn(), representative_data, input_type="int4")
    with pytest.raises(CompressionError, match="field 'representative_data'"):
        quantization.convert_int8(tiny_cnn(), None)
    with pytest.raises(ValidationError, match="preserve"):
        QATStep(preserve="everything")
    with pytest.raises(ValidationError, match="mode"):
        QuantizeStep(mode="int4")
    inputs = keras.Input((28, 28, 1))
    weightless = keras.Model(inputs, keras.layers.Flatten(name="flat")(inputs), name="weightless")
    with pytest.raises(CompressionError, match=r"no layer that qat supports.*flat \(Flatten\)"):
        quantization.prepare_qat(weightless, QATStep())


@pytest.mark.timeout(60)
def test_folding_the_input_rescaling_keeps_the_function():
    from cluster.compression.rescaling import fold_input_rescaling

    model = tiny_cnn()
    folded = fold_input_rescaling(model)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in folded.layers)
    x, _ = random_data()
    np.testing.assert_allclose(folded.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0),
                               rtol=1e-4, atol=1e-4)

"""Quantization: post-training conversions to TFLite and quantization-aware training.

Post-training modes take a float Keras model and return TFLite flatbuffer
bytes. QAT wraps the model layer by layer (the whole-model entry point fails
on `Rescaling`), fine-tunes with fake-quant ops, then converts to int8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from cluster.compression.errors import CompressionError
from cluster.compression.layers import check_exclusions, check_functional, select_layers, wrap_layers
from cluster.compression.prepared import Prepared
from cluster.compression.rescaling import fold_input_rescaling
from cluster.tflite_conversion import keras_converter

if TYPE_CHECKING:  # the steps call into this module; it needs them only as types
    from cluster.compression.steps import QATStep, QuantizeStep

qkeras = tfmot.quantization.keras

IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}

RepresentativeData = Callable[[], Iterable]


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    check_functional(model, "convert")
    return keras_converter(model)


def convert_float(model: keras.Model) -> bytes:
    """Plain float32 TFLite: the baseline the quantized variants are measured against."""
    return _converter(model).convert()


def convert_dynamic_range(model: keras.Model) -> bytes:
    """int8 weights, float activations (quantized on the fly); needs no data."""
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def convert_float16(model: keras.Model) -> bytes:
    """float16 weights, half the size; computation stays float."""
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _io_type(name: str, field: str, step: str = "quantize") -> tf.DType:
    if name not in IO_TYPES:
        raise CompressionError(f"must be one of {sorted(IO_TYPES)} (got {name!r})",
                               step=step, field=field)
    return IO_TYPES[name]


def _calibration_samples(representative_data: RepresentativeData):
    """Adapt a generator of raw-pixel batches (or (images, labels) pairs) to the converter's format."""
    def samples():
        for item in representative_data():
            images = item[0] if isinstance(item, (tuple, list)) else item
            yield [np.asarray(images, dtype=np.float32)]
    return samples


def convert_int8(model: keras.Model, representative_data: RepresentativeData,
                 input_type: str = "int8", output_type: str = "int8") -> bytes:
    """Full-integer TFLite: int8 weights and activations, ranges calibrated on sample data.

    `representative_data()` yields batches of raw pixels shaped like the model
    input (a few hundred images suffice). With int8/uint8 I/O the caller
    quantizes inputs with the input tensor's (scale, zero_point).
    """
    if not callable(representative_data):
        raise CompressionError("full-integer quantization needs a representative_data callable "
                               "yielding sample batches", step="quantize", field="representative_data")
    input_dtype, output_dtype = _io_type(input_type, "input_type"), _io_type(output_type, "output_type")
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _calibration_samples(representative_data)
    # Fail instead of silently keeping float ops the int8 kernels don't cover.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = input_dtype
    converter.inference_output_type = output_dtype
    return converter.convert()


def convert_post_training(model: keras.Model, step: QuantizeStep,
                          representative_data: RepresentativeData | None = None) -> bytes:
    """Dispatch on `step.mode`; "int8" needs `representative_data`."""
    if step.mode == "dynamic_range":
        return convert_dynamic_range(model)
    if step.mode == "float16":
        return convert_float16(model)
    return convert_int8(model, representative_data, step.input_type, step.output_type)


def quantize_scheme(step: QATStep) -> qkeras.QuantizeScheme:
    """The toolkit's scheme for what the QAT step preserves."""
    if step.preserve == "sparsity":
        return qkeras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if step.preserve in ("clusters", "sparsity_and_clusters"):
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=step.preserve == "sparsity_and_clusters")
    return qkeras.default_8bit.Default8BitQuantizeScheme()


def _default_registry():
    return qkeras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()


def is_quantizable(layer: keras.layers.Layer) -> bool:
    """Layers QAT wraps: those the default 8-bit registry knows (an input Rescaling is folded away first)."""
    return _default_registry().supports(layer)


def _has_quantizable_weights(layer: keras.layers.Layer) -> bool:
    return bool(layer.trainable_weights) and _default_registry().supports(layer)


def quantizable_layer_names(model: keras.Model, exclude=()) -> list[str]:
    """The layers `prepare_qat` annotates; raises if none of them has weights to quantize."""
    check_functional(model, "qat")
    exclude = check_exclusions(model, exclude, "qat")
    select_layers(model, _has_quantizable_weights, exclude, "qat")
    return [layer.name for layer in model.layers if layer.name not in exclude and is_quantizable(layer)]


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    return qkeras.quantize_annotate_layer(layer)


def prepare_qat(model: keras.Model, step: QATStep) -> Prepared:
    """A fake-quantized copy of `model` to fine-tune, then `convert_qat`.

    For `preserve="sparsity"`/"clusters" pass the *stripped* pruned/clustered
    model: the schemes read the zeros/centroids from its weights. Call inside
    `strategy.scope()` when training distributed; compile afterwards.
    """
    model = fold_input_rescaling(model)
    names = quantizable_layer_names(model, step.exclude)
    with qkeras.quantize_scope():
        annotated = wrap_layers(model, names, _annotate)
        quantized = qkeras.quantize_apply(annotated, quantize_scheme(step))
    return Prepared(quantized, [])


def convert_qat(model: keras.Model, input_type: str = "int8", output_type: str = "int8") -> bytes:
    """int8 TFLite from a QAT model, using the ranges learned in training (no calibration data)."""
    input_dtype = _io_type(input_type, "input_type", "qat")
    output_dtype = _io_type(output_type, "output_type", "qat")
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = input_dtype
    converter.inference_output_type = output_dtype
    return converter.convert()

"""Run a TFLite conversion of a tf_keras model without loading Keras 3 just to learn it is not one.

`TFLiteConverter.convert()` of a Keras model first asks whether the model is a Keras 3
model, by importing `keras` (Keras 3, installed beside tf_keras as a TensorFlow
dependency). That import cost each process's first conversion 0.7-0.9 s of CPU, a
third of the whole conversion of the default CNN (1.86-1.92 s against 0.97-1.36 s). Our
models are tf_keras models (`TF_USE_LEGACY_KERAS`), so during the conversion `import
keras` fails at once, which TensorFlow reads as "not a Keras 3 model".
"""

from __future__ import annotations

import contextlib
import sys

import tensorflow as tf


@contextlib.contextmanager
def _keras_3_not_importable():
    if "keras" in sys.modules:  # this process loaded Keras 3 already: TensorFlow's check costs nothing
        yield
        return
    sys.modules["keras"] = None  # Python's documented way to make an import raise ImportError
    try:
        yield
    finally:
        if "keras" in sys.modules and sys.modules["keras"] is None:
            del sys.modules["keras"]


def convert(converter: tf.lite.TFLiteConverter) -> bytes:
    """The TFLite flatbuffer of a converter made by `from_keras_model` for a tf_keras model."""
    with _keras_3_not_importable():
        return converter.convert()

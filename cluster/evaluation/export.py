"""Keras model -> float TFLite file (the conversion needs TensorFlow; running the file does not)."""

from __future__ import annotations

import os
from pathlib import Path

from cluster.evaluation.tflite import write_bytes
from cluster.tflite_conversion import keras_converter


def export_tflite(model, path: str | os.PathLike) -> Path:
    """Convert a tf_keras `model` to float32 TFLite and write it to `path`; returns the path."""
    return write_bytes(keras_converter(model).convert(), path)

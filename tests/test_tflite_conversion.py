"""Converting a tf_keras model leaves Keras 3 unloaded, and the file is the one TensorFlow's own check gives."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import cluster
import tensorflow as tf
from cluster.models import ModelShape, build_model
from cluster.tflite_conversion import convert

model = build_model("cnn", ModelShape((28, 28, 1), 10), 0.25, 2)
ours = convert(tf.lite.TFLiteConverter.from_keras_model(model))
assert "keras" not in sys.modules, "the conversion loaded Keras 3"
theirs = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # TensorFlow's check imports Keras 3
assert "keras" in sys.modules and sys.modules["keras"] is not None
assert ours == theirs, (len(ours), len(theirs))
print("ok")
"""


def test_a_conversion_never_loads_keras_3_and_writes_the_same_file():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

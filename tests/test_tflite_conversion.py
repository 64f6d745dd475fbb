"""A Keras model converts from its inference function: the file Keras's own path gives, without that path's cost."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import numpy as np
import cluster
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from cluster.models import ModelShape, build_model
from cluster.tflite_conversion import keras_converter

model = build_model("bncnn", ModelShape((28, 28, 1), 10), 0.25, 2)
ours = keras_converter(model).convert()
assert "keras" not in sys.modules, "the conversion went through Keras's SavedModel path (it loads Keras 3)"
keras_path = tf.lite.TFLiteConverter.from_keras_model(model).convert()
images = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype(np.float32)
outputs = []
for data in (ours, keras_path):
    interpreter = Interpreter(model_content=data)
    (image,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(image["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(image["index"], images)
    interpreter.invoke()
    outputs.append((image["name"], list(image["shape_signature"]),
                    interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))
(name, shape, logits), (keras_name, keras_shape, keras_logits) = outputs
assert (name, shape) == (keras_name, keras_shape) == ("serving_default_image:0", [-1, 28, 28, 1]), outputs
np.testing.assert_allclose(logits, keras_logits, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(logits, model(images, training=False).numpy(), rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_a_keras_model_converts_from_its_inference_function_to_the_same_file_keras_gives():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

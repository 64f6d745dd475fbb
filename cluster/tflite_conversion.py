"""The TFLite converter for a tf_keras model: built from the model's inference function.

`TFLiteConverter.from_keras_model` first saves the model as a Keras SavedModel
(tf_keras traces every layer's functions for its own serialization), loads it
back and converts that, and asks whether the model is a Keras 3 model by
importing Keras 3 (installed beside tf_keras as a TensorFlow dependency). For
the quickstart's CNNs that cost 1.5-2.0 s a conversion, against 0.45-0.6 s from
the inference function (float and int8; 2 fresh processes each). The file has
the same input name and shape and the same outputs (tests/test_tflite_conversion.py);
only its metadata differs (70,504 bytes against 70,500 for the w0.5 CNN).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def keras_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter of `model(x, training=False)`, its input named and shaped as the model's (any batch)."""
    if len(model.inputs) != 1:  # not a model of ours (one image input): Keras's own path
        return tf.lite.TFLiteConverter.from_keras_model(model)
    (image,) = model.inputs
    signature = [tf.TensorSpec(image.shape, image.dtype, name=model.input_names[0])]
    infer = tf.function(lambda x: model(x, training=False), input_signature=signature).get_concrete_function()
    holder = tf.Module()  # what the conversion saves: the weights the function reads, not the Keras model
    holder.weights = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([infer], holder)

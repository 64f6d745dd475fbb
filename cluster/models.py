"""Model families scaled by width and depth.

Every model takes the decoded image as the data holds it: float pixels in
[0, 255], shape (H, W, C). Normalization is a `Rescaling` layer inside the
model, so the exported artifact is fed raw pixels.
"""

from __future__ import annotations

import importlib
import json
import os
import zipfile
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from cluster.errors import ModelBuilderError, ModelFileError

# Base sizes at width 1.0. The default CNN (width 1.0, depth 2) reaches
# >= 0.91 test accuracy on Fashion-MNIST.
CNN_BASE_FILTERS = 32
CNN_DENSE_UNITS = 128
MLP_BASE_UNITS = 256
# dscnn: stem filters at width 1.0; each downsampling block doubles them.
DSCNN_BASE_FILTERS = 16
DSCNN_DOWNSAMPLINGS = 2
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class ModelShape:
    """What a family needs to know about the data."""

    image_shape: tuple[int, int, int]
    num_classes: int


def scaled(base: int, width: float) -> int:
    """A layer size scaled by the width multiplier, never below 1."""
    return max(1, int(round(base * width)))


def _pooled_conv_stack(x, shape: ModelShape, depth: int, conv):
    """`depth` blocks of `conv(x, block)`, each followed by a 2x2 max-pool while the map can halve; flattened."""
    height = min(shape.image_shape[:2])
    for block in range(depth):
        x = conv(x, block)
        if height >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
            height //= 2
    return keras.layers.Flatten(name="flatten")(x)


def build_cnn(shape: ModelShape, width: float = 1.0, depth: int = 2, dropout: float = 0.25,
              head_units: int | None = None, name: str = "cnn") -> keras.Model:
    """Conv blocks (conv 3x3 + ReLU + 2x2 max-pool), filters doubling per block, then a dense head."""
    def conv(x, block):
        return keras.layers.Conv2D(scaled(CNN_BASE_FILTERS * 2**block, width), 3, padding="same",
                                   activation="relu", name=f"conv{block + 1}")(x)

    inputs = keras.Input(shape=shape.image_shape, name="image")
    x = _pooled_conv_stack(keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs), shape, depth, conv)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout1")(x)
    units = scaled(CNN_DENSE_UNITS, width) if head_units is None else head_units
    x = keras.layers.Dense(units, activation="relu", name="dense1")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout2")(x)
    outputs = keras.layers.Dense(shape.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_mlp(shape: ModelShape, width: float = 1.0, depth: int = 2, dropout: float = 0.2,
              name: str = "mlp") -> keras.Model:
    """Dense ReLU layers of equal width, then the logits."""
    inputs = keras.Input(shape=shape.image_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for layer in range(depth):
        x = keras.layers.Dense(scaled(MLP_BASE_UNITS, width), activation="relu", name=f"dense{layer + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{layer + 1}")(x)
    outputs = keras.layers.Dense(shape.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build_bncnn(shape: ModelShape, width: float = 1.0, depth: int = 3, dropout: float = 0.0,
                head_units: int | None = None, name: str = "bncnn") -> keras.Model:
    """Conv blocks (3x3 conv + BatchNorm + ReLU + 2x2 max-pool) and a linear head: the efficient CNN.

    Filters double once (32, 64, 64, ... at width 1): past the second block
    the feature map is small, so more filters cost weights without paying in
    accuracy. No hidden dense layer: the flattened features feed the logits,
    which keeps the head (most of a small CNN's weights) small; `head_units`
    adds a hidden dense layer for larger models (the default CNN of train_full).
    """
    def conv(x, block):
        filters = scaled(CNN_BASE_FILTERS * 2 ** min(block, 1), width)
        return _conv_bn_relu(x, keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                                    name=f"conv{block + 1}"), f"conv{block + 1}")

    inputs = keras.Input(shape=shape.image_shape, name="image")
    x = _pooled_conv_stack(keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs), shape, depth, conv)
    if head_units:
        x = keras.layers.Dense(head_units, activation="relu", name="dense1")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(shape.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_bn_relu(x, layer: keras.layers.Layer, name: str):
    """`layer` (bias-free), then BatchNorm and ReLU: the pattern the converter and QAT fold into one op.

    BatchNorm's moving statistics follow the batches closely (momentum 0.9), so
    they are right after short fine-tuning runs too.
    """
    x = layer(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_dscnn(shape: ModelShape, width: float = 1.0, depth: int = 3, dropout: float = 0.1,
                name: str = "dscnn") -> keras.Model:
    """A parameter-efficient CNN for tiny artifacts (MobileNet-style).

    A 3x3 stem conv, then `depth` depthwise-separable blocks (3x3 depthwise +
    1x1 pointwise, each followed by BatchNorm and ReLU). The first
    DSCNN_DOWNSAMPLINGS blocks use stride 2 and double the filters while the
    feature map is still large enough to halve; global average pooling then
    feeds the logits directly, so there is no large dense head. The model is
    a plain chain of layers, so QAT can fold the input Rescaling into the stem.
    """
    inputs = keras.Input(shape=shape.image_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    filters = DSCNN_BASE_FILTERS
    x = _conv_bn_relu(x, keras.layers.Conv2D(scaled(filters, width), 3, padding="same", use_bias=False,
                                             name="stem"), "stem")
    height = min(shape.image_shape[:2])
    for block in range(depth):
        stride = 2 if block < DSCNN_DOWNSAMPLINGS and height >= 4 else 1
        if stride == 2:
            filters *= 2
            height = (height + 1) // 2
        x = _conv_bn_relu(x, keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                                          name=f"dw{block + 1}"), f"dw{block + 1}")
        x = _conv_bn_relu(x, keras.layers.Conv2D(scaled(filters, width), 1, use_bias=False,
                                                 name=f"pw{block + 1}"), f"pw{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(shape.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def classification_loss(num_classes: int, label_smoothing: float):
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Label smoothing needs one-hot targets; the data holds class ids. The inner loss returns
    # per-example values: Keras reduces them over the global batch (a reducing loss object
    # called inside another loss is refused under a distribution strategy).
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing,
                                                   reduction=keras.losses.Reduction.NONE)

    def smoothed_cross_entropy(labels, logits):
        return loss_fn(tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes), logits)
    return smoothed_cross_entropy


def compile_classifier(model: keras.Model, optimizer, num_classes: int, label_smoothing: float = 0.0,
                       steps_per_execution: int = 1) -> None:
    """Loss and accuracy for class-id labels and logits (a Distiller keeps its own loss)."""
    model.compile(optimizer=optimizer, loss=classification_loss(num_classes, label_smoothing),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution)


FAMILIES = {"cnn": build_cnn, "bncnn": build_bncnn, "mlp": build_mlp, "dscnn": build_dscnn}


def build_custom(family: str, shape: ModelShape, width: float, depth: int) -> keras.Model:
    """`module:function` from the job's working dir, called as function(input_shape, num_classes, width, depth)."""
    module_name, function_name = family.split(":")
    try:
        builder = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ModelBuilderError(f"model family {family!r}: cannot import it ({error}); the module must be in the "
                                "job's working dir") from None
    try:
        model = builder(tuple(shape.image_shape), shape.num_classes, width, depth)
    except Exception as error:  # the user's code may raise anything
        raise ModelBuilderError(f"model family {family!r} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, keras.Model):
        raise ModelBuilderError(f"model family {family!r} returned {type(model).__name__}, not a tf_keras model "
                                "(import tf_keras as keras, not keras)")
    if tuple(model.input_shape[1:]) != tuple(shape.image_shape) or model.output_shape[-1] != shape.num_classes:
        raise ModelBuilderError(f"model family {family!r} takes {list(model.input_shape[1:])} and gives "
                                f"{model.output_shape[-1]} outputs; the data has images of {list(shape.image_shape)} "
                                f"and {shape.num_classes} classes (logits, raw 0-255 pixels in)")
    return model


def build_model(family: str, shape: ModelShape, width: float = 1.0, depth: int = 2,
                dropout: float | None = None, head_units: int | None = None) -> keras.Model:
    """Build a model of `family` (built in, or a user's module:function); the output is logits (no softmax)."""
    if ":" in family:
        return build_custom(family, shape, width, depth)
    kwargs = {} if dropout is None else {"dropout": dropout}
    if head_units is not None:
        kwargs["head_units"] = head_units
    return FAMILIES[family](shape, width=width, depth=depth, **kwargs)


def save_keras_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Save in Keras's zip format whatever thread this runs in.

    tf-keras keeps "save .keras as zip" in a thread-local flag that its own
    save and load reset to False in any thread but the one that imported it
    (Tune runs trials in threads), after which `model.save("x.keras")` writes
    HDF5. Naming the format explicitly avoids that.
    """
    path = os.fspath(path)
    model.save(path, save_format="keras_v3")
    return path


TRUST_HINT = " (or set trust_model_code: true in the spec if you trust the file's author: its code then runs)"
# Where the layers of a model we can load without running its author's code come from.
KNOWN_MODULES = ("keras", "tf_keras", "tensorflow", "tensorflow_model_optimization")


def _objects(node):
    """Every serialized Keras object ({"class_name": ...}) in a saved model's config, depth first."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def refuse_code_in_config(path: str) -> None:
    """Read the zip's config.json, before anything is deserialized: a Lambda layer or a class from
    outside Keras (a custom object) would be code from the file's author. ModelFileError names the layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path}: no readable config.json in the .keras file ({error})") from None
    for node in _objects(config):
        config = node.get("config")
        name = config.get("name", "?") if isinstance(config, dict) else "?"
        module = node.get("module") or ""
        if node["class_name"] == "Lambda":
            raise ModelFileError(f"{path}: layer {name!r} is a Lambda layer, Python code that would run when the "
                                 f"model is used; refused: replace it with built-in layers{TRUST_HINT}")
        registered = node.get("registered_name") or ""
        if ">" in registered or (module and module.split(".")[0] not in KNOWN_MODULES):  # "Package>Name": custom
            raise ModelFileError(f"{path}: layer {name!r} is {registered or node['class_name']} "
                                 f"from {module or 'an unknown module'}, a custom object whose code would run when "
                                 f"loaded; refused: only built-in Keras layers load{TRUST_HINT}")


def load_keras_model(path: str | os.PathLike, own_file: bool = False, trust_code: bool = False) -> keras.Model:
    """A saved model in Keras's zip format (`.keras`), loaded in safe mode, uncompiled.

    Only the zip format: tf-keras's safe mode protects nothing else, and an
    HDF5 or SavedModel file with a Lambda layer runs its code on load. A file
    from a user (a baseline, `init_from`, an artifact to evaluate) must hold
    only built-in Keras layers; `own_file` skips that check for a file this job
    wrote itself from the spec's own model (whose builder may be the user's).
    `trust_code` (a spec's `trust_model_code: true`) loads any saved format
    with safe mode off: the file's Lambda layers and custom objects then run.
    """
    path = os.fspath(path)
    if trust_code:
        if not os.path.exists(path):
            raise ModelFileError(f"{path}: no such model file")
        try:
            return keras.models.load_model(path, compile=False, safe_mode=False)
        except Exception as error:  # the loader raises many types for a bad file
            raise ModelFileError(f"{path}: not a loadable Keras model ({error})") from None
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras zip model (.keras); HDF5 and SavedModel files can run code "
                             f"when loaded, so they are refused: re-save the model in the .keras format{TRUST_HINT}")
    if not own_file:
        refuse_code_in_config(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # the loader raises many types for a bad file
        raise ModelFileError(f"{path}: not a loadable Keras model ({error})") from None

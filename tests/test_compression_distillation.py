"""Distillation: the loss's limiting cases, a Distiller that learns, and teacher/student validation."""

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from cluster.compression.distillation import Distiller, distillation_loss
from cluster.compression.errors import CompressionError
from cluster.models import ModelShape, build_model

SHAPE = ModelShape((16, 16, 1), 4)


def quadrant_task(n=256, seed=0):
    """Class c = which quadrant holds a bright square: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 40, (n, 16, 16, 1)).astype("float32")
    labels = rng.integers(0, 4, n)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[row * 8 + 2:row * 8 + 6, col * 8 + 2:col * 8 + 6] += 200.0
    return images, labels


def logits(seed, n=32, classes=5):
    return np.random.default_rng(seed).normal(0, 3, (n, classes)).astype("float32")


@pytest.mark.timeout(30)
def test_alpha_zero_is_plain_sparse_cross_entropy():
    labels = np.random.default_rng(0).integers(0, 5, 32)
    student, teacher = logits(1), logits(2)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, student).numpy()
    for temperature in (1.0, 4.0):
        got = distillation_loss(labels, student, teacher, temperature, 0.0).numpy()
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(30)
def test_alpha_one_is_scaled_kl_and_zero_when_student_equals_teacher():
    labels = np.zeros(32, dtype=np.int64)
    teacher = logits(3)
    assert np.allclose(distillation_loss(labels, teacher, teacher, 3.0, 1.0).numpy(), 0.0, atol=1e-6)
    student, temperature = logits(4), 2.0
    p = tf.nn.softmax(teacher / temperature).numpy()
    q = tf.nn.softmax(student / temperature).numpy()
    expected = temperature**2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    got = distillation_loss(labels, student, teacher, temperature, 1.0).numpy()
    assert np.allclose(got, expected, rtol=1e-4)
    # alpha mixes the two terms linearly.
    hard = distillation_loss(labels, student, teacher, temperature, 0.0).numpy()
    mixed = distillation_loss(labels, student, teacher, temperature, 0.3).numpy()
    assert np.allclose(mixed, 0.3 * expected + 0.7 * hard, rtol=1e-4)


@pytest.mark.timeout(120)
def test_distiller_fit_reduces_loss_and_keeps_the_teacher_frozen():
    keras.utils.set_random_seed(0)
    x, y = quadrant_task()
    teacher = build_model("cnn", SHAPE, width=0.5, depth=1)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    teacher.fit(x, y, batch_size=32, epochs=3, verbose=0)
    teacher_weights = [w.copy() for w in teacher.get_weights()]

    student = build_model("mlp", SHAPE, width=0.125, depth=1)
    distiller = Distiller(teacher, student, temperature=3.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(3e-3))
    history = distiller.fit(x, y, batch_size=32, epochs=4, validation_data=quadrant_task(64, seed=1), verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert {"loss", "student_loss", "accuracy", "val_loss", "val_student_loss", "val_accuracy"} <= set(history.history)
    assert history.history["val_accuracy"][-1] > 0.5
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    # The trained student is an ordinary model.
    assert distiller.student(x[:2]).shape == (2, 4)


@pytest.mark.timeout(60)
def test_distiller_is_created_and_trained_in_a_strategy_scope():
    x, y = quadrant_task(64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        teacher = build_model("mlp", SHAPE, width=0.125, depth=1)
        distiller = Distiller(teacher, build_model("mlp", SHAPE, width=0.0625, depth=1))
        distiller.compile(keras.optimizers.Adam())
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.timeout(30)
def test_mismatched_teacher_and_student_are_rejected_by_name():
    teacher = build_model("cnn", SHAPE, width=0.25)
    other_classes = build_model("mlp", ModelShape((16, 16, 1), 7), width=0.125)
    with pytest.raises(CompressionError, match=r"number of classes: teacher 'cnn' 4 vs student 'mlp' 7"):
        Distiller(teacher, other_classes)
    other_input = build_model("mlp", ModelShape((28, 28, 1), 4), width=0.125)
    with pytest.raises(CompressionError, match=r"input shape: teacher 'cnn' \(16, 16, 1\) vs student 'mlp' \(28, 28, 1\)"):
        Distiller(teacher, other_input)
    student = build_model("mlp", SHAPE, width=0.125)
    with pytest.raises(CompressionError, match="field 'alpha'"):
        Distiller(teacher, student, alpha=1.5)
    with pytest.raises(CompressionError, match="field 'temperature'"):
        Distiller(teacher, student, temperature=0)

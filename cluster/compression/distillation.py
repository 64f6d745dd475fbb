"""Knowledge distillation (Hinton et al., 2015): a small student learns from a frozen teacher.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * sparse_CE(labels, student)
The T^2 factor keeps the soft-target gradients on the scale of the hard ones
as T changes.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from cluster.compression.errors import CompressionError

TECHNIQUE = "distill"


def hard_loss(labels, logits) -> tf.Tensor:
    """Per-example sparse categorical cross-entropy from logits; labels (batch,) or (batch, 1)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tf.reshape(labels, [-1]), tf.int32), logits=logits)


def per_example_distillation_loss(labels, student_logits, teacher_logits,
                                  temperature: float, alpha: float) -> tf.Tensor:
    """The distillation loss of each example, shape (batch,)."""
    student_logits = tf.convert_to_tensor(student_logits, tf.float32)
    teacher_logits = tf.convert_to_tensor(teacher_logits, tf.float32)
    hard = hard_loss(labels, student_logits)
    # KL from log-softmax, not softmax ratios: stable when probabilities underflow.
    teacher_log_p = tf.nn.log_softmax(teacher_logits / temperature)
    student_log_p = tf.nn.log_softmax(student_logits / temperature)
    kl = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return alpha * temperature**2 * kl + (1.0 - alpha) * hard


def distillation_loss(labels, student_logits, teacher_logits,
                      temperature: float, alpha: float) -> tf.Tensor:
    """Mean distillation loss over the batch (a scalar)."""
    return tf.reduce_mean(per_example_distillation_loss(
        labels, student_logits, teacher_logits, temperature, alpha))


def check_compatible(teacher: keras.Model, student: keras.Model) -> None:
    """Teacher and student must read the same input and predict the same classes."""
    problems = []
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        problems.append(f"input shape: teacher '{teacher.name}' {tuple(teacher.input_shape[1:])} vs "
                        f"student '{student.name}' {tuple(student.input_shape[1:])}")
    if teacher.output_shape[-1] != student.output_shape[-1]:
        problems.append(f"number of classes: teacher '{teacher.name}' {teacher.output_shape[-1]} vs "
                        f"student '{student.name}' {student.output_shape[-1]}")
    if problems:
        raise CompressionError("teacher and student do not match: " + "; ".join(problems),
                               step=TECHNIQUE, field="student")


def check_parameters(temperature: float, alpha: float) -> None:
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise CompressionError(f"must be > 0 (got {temperature!r})", step=TECHNIQUE, field="temperature")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise CompressionError(f"must be in [0, 1] (got {alpha!r})", step=TECHNIQUE, field="alpha")


class Distiller(keras.Model):
    """Trains `student` against `teacher` (frozen) with `fit`.

    Compile with just an optimizer: the loss is the distillation loss and the
    reported metrics are fixed (loss, student_loss, accuracy of the student);
    a `loss` or `metrics` given to compile are not used. Create (and compile)
    inside `strategy.scope()` when training distributed. After training, use
    `distiller.student`.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model,
                 temperature: float = 4.0, alpha: float = 0.9, **kwargs):
        check_compatible(teacher, student)
        check_parameters(temperature, alpha)
        super().__init__(**kwargs)
        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        # Listed here so Keras resets them every epoch.
        return [self.loss_tracker, self.student_loss_tracker, self.accuracy]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _forward(self, x, y, training):
        teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=training)
        per_example = per_example_distillation_loss(
            y, student_logits, teacher_logits, self.temperature, self.alpha)
        return student_logits, per_example, hard_loss(y, student_logits)

    def _update_metrics(self, y, student_logits, per_example, hard):
        self.loss_tracker.update_state(per_example)
        self.student_loss_tracker.update_state(hard)
        self.accuracy.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            student_logits, per_example, hard = self._forward(x, y, training=True)
            # Average over the global batch: replicas' gradients are summed.
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update_metrics(y, student_logits, per_example, hard)

    def test_step(self, data):
        x, y = data[0], data[1]
        student_logits, per_example, hard = self._forward(x, y, training=False)
        return self._update_metrics(y, student_logits, per_example, hard)

"""Optimizers and learning-rate schedules from the spec."""

from __future__ import annotations

import tf_keras as keras


def learning_rate(train, steps_per_epoch: int):
    """Cosine decay to zero, or constant, each after an optional linear warm-up.

    A constant rate is a cosine decay with alpha=1 (it never decays), so both
    share the warm-up and the optimizer's step counter drives them on resume.
    """
    total = max(1, train.epochs * steps_per_epoch)
    warmup = train.warmup_epochs * steps_per_epoch
    peak = train.optimizer.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak if warmup == 0 else 0.0,
        decay_steps=max(1, total - warmup),
        alpha=1.0 if train.schedule == "constant" else 0.0,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def build_optimizer(train, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    spec = train.optimizer
    rate = learning_rate(train, steps_per_epoch)
    if spec.name == "adam":
        return keras.optimizers.Adam(rate)
    if spec.name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=spec.weight_decay)
    if spec.name == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=spec.momentum)
    return keras.optimizers.SGD(rate, momentum=spec.momentum, nesterov=True,
                                weight_decay=spec.weight_decay or None)

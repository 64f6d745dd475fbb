"""What preparing a model for fine-tuning hands back."""

from __future__ import annotations

from dataclasses import dataclass, field

import tf_keras as keras


@dataclass
class Prepared:
    """A model ready to `compile` and `fit`, plus the callbacks `fit` must get.

    `needs_fine_tuning` is False for steps that only change the model
    (post-training quantization): the model can go straight to conversion.
    """

    model: keras.Model
    callbacks: list[keras.callbacks.Callback] = field(default_factory=list)
    needs_fine_tuning: bool = True

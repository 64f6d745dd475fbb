"""Running an ordered chain of typed compression steps on a Keras model, then converting it.

    steps = parse_pipeline([
        {"distill": {"student": {"family": "cnn", "width": 0.5}, "temperature": 4}},
        {"prune": {"final_sparsity": 0.8, "end_step": 2000}},
        {"quantize": {"mode": "int8"}},
    ])
    check_model(steps, model)                        # all bad input fails here
    for step in steps:
        with strategy.scope():
            prepared = step.prepare(model)
            prepared.model.compile(...)
        if prepared.needs_fine_tuning:
            prepared.model.fit(..., callbacks=prepared.callbacks)
        model = step.finalize(prepared.model)
    tflite = convert(steps, model, representative_data)

The steps themselves (options, order rules) live in `cluster.compression.steps`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import tf_keras as keras
from pydantic import ValidationError

from cluster.compression import quantization
from cluster.compression.errors import CompressionError
from cluster.compression.prepared import Prepared
from cluster.compression.steps import QATStep, QuantizeStep, StepBase, conversion, parse_steps


def _error_from(error: ValidationError, raw: Any) -> CompressionError:
    """pydantic's first problem as a CompressionError naming position, technique and field."""
    item = error.errors()[0]
    loc = list(item["loc"])
    position = loc.pop(0) + 1 if loc and isinstance(loc[0], int) else None
    technique = loc.pop(0) if loc and isinstance(loc[0], str) and position is not None else None
    if technique is None and position is not None and isinstance(raw, Sequence) and position <= len(raw):
        entry = raw[position - 1]
        technique = next(iter(entry), None) if isinstance(entry, dict) and "technique" not in entry else None
    field = str(loc[0]) if loc else None
    return CompressionError(item["msg"].removeprefix("Value error, "), step=technique, field=field,
                            position=position)


def parse_pipeline(raw: Sequence[Any]) -> list[StepBase]:
    """Validate steps (typed, or dicts in the YAML form) and their order; CompressionError on bad input."""
    if all(isinstance(step, StepBase) for step in raw):
        raw = [step.model_dump() for step in raw]
    try:
        return parse_steps(raw)
    except ValidationError as error:
        raise _error_from(error, raw) from None


def _steps(steps: Sequence[Any]) -> list[StepBase]:
    return list(steps) if all(isinstance(s, StepBase) for s in steps) else parse_pipeline(steps)


def check_model(steps: Sequence[Any], model: keras.Model, student: keras.Model | None = None) -> None:
    """Check that every step can apply to the model it will get, before any training.

    Layer support is checked on `model`, or on the student for steps after a
    distill step (built from its settings when no `student` is given).
    """
    target = model
    for position, step in enumerate(_steps(steps), start=1):
        try:
            target = step.check(target, student) if step.technique == "distill" else step.check(target)
        except CompressionError as error:
            raise error.at_position(position) from None


def convert(steps: Sequence[Any], model: keras.Model,
            representative_data: quantization.RepresentativeData | None = None) -> bytes:
    """TFLite bytes for the finalized model, quantized as the steps say (float if they don't)."""
    steps = _steps(steps)
    mode = conversion(steps)
    if mode == "float":
        return quantization.convert_float(model)
    quantizing = next(s for s in steps if isinstance(s, (QATStep, QuantizeStep)))
    if mode == "qat":
        return quantization.convert_qat(model, quantizing.input_type, quantizing.output_type)
    return quantization.convert_post_training(model, quantizing, representative_data)


FineTune = Callable[[StepBase, Prepared], None]


def run_pipeline(steps: Sequence[Any], model: keras.Model, fine_tune: FineTune,
                 representative_data: quantization.RepresentativeData | None = None,
                 student: keras.Model | None = None, strategy=None) -> tuple[keras.Model, bytes]:
    """Check, then prepare -> fine_tune(step, prepared) -> finalize each step, then convert.

    `fine_tune` compiles and fits `prepared.model` with `prepared.callbacks`;
    it is skipped for steps that need none. Preparation runs in
    `strategy.scope()` when a strategy is given.
    """
    steps = _steps(steps)
    check_model(steps, model, student)
    if conversion(steps) == "int8" and representative_data is None:
        raise CompressionError("int8 conversion needs representative_data",
                               step="quantize", field="representative_data")
    for step in steps:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            prepared = step.prepare(model, student)
        if prepared.needs_fine_tuning:
            fine_tune(step, prepared)
        model = step.finalize(prepared.model)
    return model, convert(steps, model, representative_data)

"""Glue between the compress job and the techniques: loading step models, filling in schedules."""

from __future__ import annotations

import copy
import os

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from cluster.compression.errors import CompressionError

# Sparsity ramps up over the first 80% of fine-tuning and holds for the rest,
# so the last epochs recover accuracy at the final sparsity (Zhu & Gupta 2017).
RAMP_FRACTION = 0.8
MASK_UPDATES = 20


def load_model(path: str | os.PathLike) -> keras.Model:
    """A saved plain Keras model (a baseline or the output of an earlier step), loaded in safe mode."""
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # the loader raises many types for a bad file
        raise CompressionError(f"{path} is not a loadable Keras model ({error})", step="baseline",
                               field="path") from None


def technique(step: dict) -> str:
    (name,) = step.keys()
    return name


def resolved_steps(pipeline: list[dict]) -> list[dict]:
    """The pipeline's steps as dicts that stand alone: a QAT step names what it preserves.

    A QAT step's default preservation depends on the steps before it; a step
    fine-tuned on its own (in a Ray Train run) no longer sees them.
    """
    from cluster.compression.pipeline import parse_pipeline

    parsed = parse_pipeline(pipeline)
    steps = []
    for raw, step in zip(pipeline, parsed.steps):
        raw = {step.technique: dict(next(iter(raw.values())) or {})}
        if step.technique == "qat":
            raw["qat"]["preserve"] = step.config.preserve
        steps.append(raw)
    return steps


def step_with_schedule(step: dict, total_steps: int) -> dict:
    """A prune step with its schedule's steps filled in from the fine-tuning length, unless given."""
    if technique(step) != "prune":
        return step
    step = copy.deepcopy(step)
    options = step["prune"] = dict(step["prune"] or {})
    if options.get("sparsity_m_by_n") is not None:
        options["sparsity_m_by_n"] = tuple(options["sparsity_m_by_n"])  # YAML gives a list
    schedule = options.get("schedule", "polynomial_decay")
    if schedule == "polynomial_decay" and "end_step" not in options:
        begin = options.get("begin_step", 0)
        options["end_step"] = max(begin + 1, int(RAMP_FRACTION * total_steps))
        options.setdefault("frequency", max(1, (options["end_step"] - begin) // MASK_UPDATES))
    if schedule == "constant" and "end_step" not in options:
        options["end_step"] = -1
        options.setdefault("frequency", max(1, total_steps // MASK_UPDATES))
    return step

"""A variant's compression pipeline, walked step by step: the one walk the Ray Train workers (which fit
each fine-tuned step) and the driver (which replays the fitted weights) both make.

Each step is prepared on the previous step's finalized model, loaded from a
file as a worker loads it; a fine-tuned step's weights after its last epoch are
stored in the run's storage at `<variant>/step<k>-<technique>/` (our checkpoint
layout), so the driver, or a worker group restarted after a failure, rebuilds a
finished step from its record instead of fitting it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import ray.train
import tf_keras as keras

from cluster.compression.prepared import Prepared
from cluster.compression.steps import STEP, StepBase
from cluster.models import load_keras_model, save_keras_model
from cluster.spec import TrainSpec
from cluster.storage import RunStorage
from cluster.training import checkpoints


@dataclass(frozen=True)
class VariantPlan:
    """One variant to build: its steps (schedules filled in) and, per step, the recipe that fits it
    (None for a step that is not fine-tuned)."""

    name: str
    steps: tuple[StepBase, ...]
    recipes: tuple[TrainSpec | None, ...]

    def record(self, index: int) -> str:
        """Where step `index`'s fitted weights are stored, relative to the run's records folder."""
        return f"{self.name}/step{index + 1}-{self.steps[index].technique}"

    def task(self, index: int) -> dict:
        """What step `index`'s checkpoints and record carry: weights fitted for another step or recipe
        (a variant whose spec changed) are never taken for these. Steps per call is left out: it changes
        how the same updates are run, not the weights."""
        return {"record": self.record(index), "step": self.steps[index].model_dump(mode="json"),
                "recipe": self.recipes[index].model_dump(mode="json", exclude={"steps_per_execution"})}

    def dump(self) -> dict:
        return {"name": self.name, "steps": [step.model_dump(mode="json") for step in self.steps],
                "recipes": [None if r is None else r.model_dump(mode="json") for r in self.recipes]}

    @classmethod
    def load(cls, raw: dict) -> VariantPlan:
        return cls(raw["name"], tuple(STEP.validate_python(step) for step in raw["steps"]),
                   tuple(None if r is None else TrainSpec.model_validate(r) for r in raw["recipes"]))


def has_record(records: RunStorage, plan: VariantPlan, index: int) -> bool:
    """Step `index` of `plan` has fitted weights stored for exactly this step and recipe."""
    meta = f"{plan.record(index)}/{checkpoints.META_FILE}"
    if not records.exists(meta):
        return False
    try:
        return json.loads(records.read_text(meta)).get("task") == plan.task(index)
    except json.JSONDecodeError:  # cut off mid-write: fit it again
        return False


def restore_record(records: RunStorage, plan: VariantPlan, index: int, model: keras.Model) -> list | None:
    """Load step `index`'s stored weights into `model` and return its history; None when there is no
    whole record of exactly this step and recipe."""
    if not has_record(records, plan, index):
        return None
    try:
        with ray.train.Checkpoint(records.path(plan.record(index))).as_directory() as directory:
            return checkpoints.restore(directory, model)["history"]
    except checkpoints.CheckpointError:  # cut off mid-write: fit it again
        return None


# fit(index, step, prepared) fits a fine-tuned step's prepared model (or restores its stored weights)
# and returns the step's per-epoch history.
FitStep = Callable[[int, StepBase, Prepared], list]


def walk(plan: VariantPlan, input_model: str, scratch: str, fit: FitStep,
         trust_code: bool = False) -> tuple[keras.Model, dict[str, list]]:
    """Apply the plan's steps to the model file `input_model`; returns the last finalized model and each
    fine-tuned step's history, keyed `step<k>-<technique>`.

    Call it inside the strategy's scope on a worker: every model is loaded and prepared there.
    """
    path, model, histories = input_model, None, {}
    for index, step in enumerate(plan.steps):
        recipe = plan.recipes[index]
        if recipe is not None:
            # Before `prepare`: a distill step initialises its student there.
            keras.utils.set_random_seed(recipe.seed)
        prepared = step.prepare(load_keras_model(path, own_file=True, trust_code=trust_code))
        if step.fine_tuned:
            histories[plan.record(index).split("/", 1)[1]] = fit(index, step, prepared)
        model = step.finalize(prepared.model)
        if index < len(plan.steps) - 1:
            path = os.path.join(scratch, f"{plan.name}-step{index + 1}.keras")
            save_keras_model(model, path)
    return model, histories

"""Build compressed variants on the cluster: every fine-tuned step of every variant in one Ray Train run.

A step that needs fine-tuning (distill, prune, cluster, qat) trains over the
streaming data pipeline. One Ray Train run (`finetune_loop_per_worker`) fits
the steps of all the variants asked for, in turn, each from its own baseline
file (a sweep's variants of several scales share a run), so a job pays one
worker-group start, not one per step or variant. The fitted weights of each step are
stored at `<run_root>/<variant>/step<k>-<technique>/`; the caller's process
then walks each pipeline again from the baseline file with those weights
(`cluster.training.fine_tuning.walk`) and converts the last model to TFLite.
A rerun fits only the steps with no stored weights.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from cluster.compression.pipeline import convert
from cluster.compression.steps import DistillStep, StepBase
from cluster.storage import RunStorage
from cluster.training.batches import steps_per_epoch
from cluster.training.fine_tuning import VariantPlan, has_record, restore_record, walk
from cluster.training.entry import finetune_loop_per_worker
from cluster.training.trainer import run_training

FINE_TUNING_RUN = "_fine-tuning"  # no variant name starts with "_", so it never meets a variant's folder


def plan_variant(job, fine_tune, name: str, steps: list[StepBase], prepared, distill_train=None) -> VariantPlan:
    """The variant's steps with their schedules filled in from the length of their fine-tuning.

    A distill step trains with `distill_train` when given (a fresh student needs
    a training run, not a fine-tuning one), the other steps with `fine_tune`.
    """
    scheduled, recipes = [], []
    for step in steps:
        recipe = None
        if step.fine_tuned:
            recipe = distill_train if distill_train is not None and isinstance(step, DistillStep) else fine_tune
            total = recipe.epochs * steps_per_epoch(prepared.plan.train_rows, job.scaling, recipe.global_batch_size)
            step = step.scheduled(total)
        scheduled.append(step)
        recipes.append(recipe)
    return VariantPlan(name, tuple(scheduled), tuple(recipes))


def build_variants(job, plans: list[VariantPlan], seed: int, baselines: Mapping[str, str], prepared, representative,
                   storage: RunStorage, scratch: Path, run_root: str = "variants", run_name: str = FINE_TUNING_RUN,
                   callbacks=(), trust_code: bool = False) -> Iterator[tuple[VariantPlan, object, Path, dict]]:
    """Fit every plan's fine-tuned steps in one Ray Train run, then yield each variant as
    (plan, final Keras model, TFLite path, per-step histories), in plan order.

    `baselines` maps each plan's name to the local .keras file its steps start
    from. `job` supplies data, augment and scaling; `seed` the data pipeline's. The
    run is `<run_root>/<run_name>` (a rerun resumes it); the steps' weights go
    to `<run_root>/<variant>/step<k>-<technique>/`. `trust_code`: the
    baseline came from a user who trusts its code (Lambda layers load only with
    safe mode off).
    """
    records = RunStorage(storage.path(run_root))
    pending = [plan for plan in plans if any(step.fine_tuned and not has_record(records, plan, index)
                                             for index, step in enumerate(plan.steps))]
    if pending:
        config = {"plans": [plan.dump() for plan in pending],
                  "input_models": {plan.name: baselines[plan.name] for plan in pending},
                  "records": records.path(), "scaling": job.scaling.model_dump(mode="json"),
                  "trust_model_code": trust_code}
        run_training(finetune_loop_per_worker, config, job, prepared, seed, storage_path=records.path(),
                     run_name=run_name, callbacks=callbacks)

    for plan in plans:
        def restore(index: int, _step, prepared_step) -> list:
            history = restore_record(records, plan, index, prepared_step.model)
            if history is None:
                raise RuntimeError(f"{records.path(plan.record(index))}: the fine-tuning run left no whole record "
                                   "of this step")
            return history

        with tempfile.TemporaryDirectory(dir=scratch) as steps_scratch:
            model, histories = walk(plan, baselines[plan.name], steps_scratch, restore, trust_code=trust_code)
        tflite_path = scratch / f"{plan.name}.tflite"
        tflite_path.write_bytes(convert(list(plan.steps), model, representative))
        yield plan, model, tflite_path, histories

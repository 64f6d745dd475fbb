"""Build a compressed variant on the cluster: each fine-tuned step is a Ray Train run.

A step that needs fine-tuning (distill, prune, cluster, qat) runs as its own
Ray Train run over the streaming data pipeline, starting from the previous
step's model file; the caller's process then rebuilds the step's model from
the run's checkpoint, finalizes it (strips wrappers, takes the student) and
saves it for the next step. The last model is converted to TFLite.
"""

from __future__ import annotations

from pathlib import Path

from cluster.compression.pipeline import convert
from cluster.compression.steps import DistillStep, StepBase
from cluster.models import load_keras_model, save_keras_model
from cluster.training import checkpoints
from cluster.training.loop import finetune_loop_per_worker
from cluster.training.batches import steps_per_epoch
from cluster.training.trainer import run_training


def fine_tune_step(job, fine_tune, name: str, index: int, step: StepBase, model_path: str, prepared, storage,
                   run_root: str, callbacks=(), trust_code: bool = False):
    """Fine-tune one step on the cluster; returns (finalized model, per-epoch history).

    `trust_code`: the model came from a user who trusts its code (Lambda layers load only with safe mode off).
    """
    total_steps = fine_tune.epochs * steps_per_epoch(prepared.plan.train_rows, job.scaling,
                                                     fine_tune.global_batch_size)
    step = step.scheduled(total_steps)
    config = {"train": fine_tune.model_dump(mode="json"), "scaling": job.scaling.model_dump(mode="json"),
              "step": step.model_dump(mode="json"), "input_model": model_path, "trust_model_code": trust_code}
    result, _usage = run_training(finetune_loop_per_worker, config, job, prepared, fine_tune.seed,
                                  storage_path=storage.path(run_root),
                                  run_name=f"{name}/step{index + 1}-{step.technique}", callbacks=callbacks)
    rebuilt = step.prepare(load_keras_model(model_path, own_file=True, trust_code=trust_code))
    with result.checkpoint.as_directory() as directory:
        meta = checkpoints.restore(directory, rebuilt.model)
    return step.finalize(rebuilt.model), meta["history"]


def build_variant(job, fine_tune, name: str, steps: list[StepBase], baseline_path: str, prepared, representative,
                  storage, scratch: Path, run_root: str = "variants", callbacks_factory=lambda: [],
                  trust_code: bool = False, distill_train=None):
    """Run the pipeline from the baseline file; returns (final Keras model, TFLite path, per-step histories).

    `job` supplies data, augment and scaling; each fine-tuned step's Ray Train
    run is stored under `<run_root>/<name>/step<k>-<technique>` (a rerun resumes it).
    A distill step trains with `distill_train` when given (a fresh student needs
    a training run, not a fine-tuning one), the other steps with `fine_tune`.
    """
    model_path, model, histories = baseline_path, None, {}
    for index, step in enumerate(steps):
        if step.fine_tuned:
            recipe = distill_train if distill_train is not None and isinstance(step, DistillStep) else fine_tune
            model, histories[f"step{index + 1}-{step.technique}"] = fine_tune_step(
                job, recipe, name, index, step, model_path, prepared, storage, run_root, callbacks_factory(),
                trust_code)
        else:
            model = step.finalize(step.prepare(load_keras_model(model_path, own_file=True,
                                                                trust_code=trust_code)).model)
        if index < len(steps) - 1:
            # The next step's Ray Train workers load the model from a file.
            model_path = str(scratch / f"{name}-step{index + 1}.keras")
            save_keras_model(model, model_path)
    tflite_path = scratch / f"{name}.tflite"
    tflite_path.write_bytes(convert(steps, model, representative))
    return model, tflite_path, histories

"""`kind: sweep`: search model scale x compression with Ray Tune, measure every artifact, pick the sweet spot.

Two Tune experiments, each trial running Ray Train inside it:
  1. scales: one trial per (width, depth) trains the float baseline; ASHA (optional)
     stops weak scales early on validation accuracy.
  2. variants: the (scale, compression pipeline) pairs with fine-tuning steps, a
     batch per concurrent trial; each trial's one Ray Train run fine-tunes its
     variants in turn from their scales' baselines (a distillation step uses the
     baseline as teacher). Post-training variants are built in the driver.
Then every artifact is measured here, in one process on one node, so the
ratios are fair; the Pareto frontiers and the sweet spot follow, the sweet
spot's file is copied to `best.tflite`, and the report is written.

Submitting the same spec again resumes from what the trials recorded (never
from Tune's pickled state): finished trials are not run again, and measured
variants are not measured again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.train import Checkpoint
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search.optuna import OptunaSearch

from cluster.compression.steps import has_qat, parse_steps, techniques
from cluster.data.pipeline import PreparedData, load_arrays, prepare, representative_images, validation_arrays
from cluster.evaluation.compute import compute_profile
from cluster.evaluation.files import gzip_size_bytes
from cluster.evaluation.measure import measure
from cluster.evaluation.export import export_tflite
from cluster.evaluation.tflite import TFLiteModel
from cluster.models import ModelShape, build_model, load_keras_model, save_keras_model
from cluster.reporting import html_page, markdown, verdict
from cluster.results import SCALE_MODEL, FailedTrial, ReferencePoint, SweepSummary, VariantResult
from cluster.runs import claim_run_folder, log
from cluster.spec import SweepJob, TrainSpec, run_dir
from cluster.storage import RunStorage, fetch_local
from cluster.training.checkpoints import restored_model
from cluster.training.entry import train_loop_per_worker
from cluster.training.resources import Capacity
from cluster.training.trainer import run_training
from cluster.training.variants import FINE_TUNING_RUN, build_variants, plan_variant
from cluster.tuning.asha import NoiseAwareASHA
from cluster.tuning.budget import plan_concurrency
from cluster.tuning.pareto import choose, pareto_front
from cluster.tuning.scale_trial import scale_train_job, scale_trial
from cluster.tuning.search import STUDY_NAME, DefineSpace, candidate_of, seed_points, study_storage
from cluster.tuning.size_probe import SizePlan, plan_by_size, size_floor
from cluster.tuning.space import Scale, UnreachableConstraint, Variant, check_reachable, expand

SCALE_HISTORY = "scales/{scale}/history.json"
STOPPED = "scales/{scale}/stopped.json"  # a scale trial ASHA stopped early, with its epochs
VARIANT_TFLITE = "variants/{variant}/model.tflite"
VARIANT_MODEL = "variants/{variant}/model.keras"
VARIANT_HISTORY = "variants/{variant}/history.json"
RECORD = "records/{variant}.json"
SCORE = "scores/{variant}.json"
SKIPPED = "skipped/{variant}.json"  # a candidate judged too large for max_size_kb before training
FAILED = "failed/{trial}.json"  # a trial's error: a resubmit reports it again instead of rerunning it


def final_checkpoint(spec: SweepJob, storage: RunStorage, scale: Scale) -> Checkpoint | None:
    """The scale's Ray Train checkpoint after its last epoch, found in storage by its meta.json
    (not by Tune's record of the trial, which a driver killed at the wrong moment never wrote)."""
    folder = f"trials/{scale.name}"
    for name in reversed([n for n in storage.names(folder) if n.startswith("checkpoint_")]):  # newest first
        meta = f"{folder}/{name}/meta.json"
        if storage.exists(meta) and json.loads(storage.read_text(meta)).get("epoch", 0) >= spec.train.epochs:
            return Checkpoint(storage.path(f"{folder}/{name}"))
    return None


def settled(storage: RunStorage, scale: Scale) -> bool:
    """Trained and exported, or stopped early: an attempt of the sweep has nothing left to do for it."""
    return storage.exists(SCALE_HISTORY.format(scale=scale.name)) or storage.exists(STOPPED.format(scale=scale.name))


def trained_epochs(storage: RunStorage, scale: Scale) -> int:
    if storage.exists(SCALE_HISTORY.format(scale=scale.name)):
        return len(json.loads(storage.read_text(SCALE_HISTORY.format(scale=scale.name))))
    return json.loads(storage.read_text(STOPPED.format(scale=scale.name)))["epochs"]


def export_scale(spec: SweepJob, storage: RunStorage, scale: Scale, checkpoint: Checkpoint) -> None:
    """A trained scale's Keras model and history, from its Ray Train checkpoint."""
    job = scale_train_job(spec, scale)
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as scratch:
        model, meta = restored_model(job.model, job.data, directory)
        save_keras_model(model, Path(scratch) / "model.keras")
        storage.upload(Path(scratch) / "model.keras", SCALE_MODEL.format(scale=scale.name))
    # Written last: a scale whose history exists is trained and exported.
    storage.write_text(SCALE_HISTORY.format(scale=scale.name), json.dumps(meta["history"]))


def store_variants(spec: SweepJob, prepared: PreparedData, storage: RunStorage, variants: list[Variant],
                   callbacks=()) -> None:
    """Build variants from their scales' baselines, fine-tuning them all in one Ray Train run; store each
    one's TFLite file, Keras model and histories.

    The histories are written last: a variant that has them was built whole, and
    is not built again (a driver that died after it, or a resubmitted sweep).
    """
    variants = [v for v in variants if not storage.exists(VARIANT_HISTORY.format(variant=v.name))]
    if not variants:
        return
    names = ", ".join(v.name for v in variants)
    log(f"building {names}" + (" (fine-tuned in turn in one Ray Train run)" if len(variants) > 1 else
                               f" from {variants[0].scale.name}"))
    started = time.monotonic()
    baselines = {}
    for variant in variants:
        baselines[variant.name] = fetch_local(storage.path(SCALE_MODEL.format(scale=variant.scale.name)))
        if baselines[variant.name] is None:
            raise RuntimeError(f"the baseline of scale {variant.scale.name} is missing (its trial failed or stopped)")
    representative = representative_images(prepared, spec.data, spec.representative_samples)
    plans = [plan_variant(spec, spec.fine_tune, v.name, list(v.pipeline), prepared) for v in variants]
    with tempfile.TemporaryDirectory() as scratch:
        built = build_variants(spec, plans, spec.fine_tune.seed, baselines, prepared, representative, storage,
                               Path(scratch), run_root="trials", run_name=f"{variants[0].name}/{FINE_TUNING_RUN}",
                               callbacks=callbacks)
        for variant, (_, model, tflite_path, histories) in zip(variants, built):
            storage.upload(tflite_path, VARIANT_TFLITE.format(variant=variant.name))
            if not has_qat(variant.pipeline):
                save_keras_model(model, Path(scratch) / "final.keras")
                storage.upload(Path(scratch) / "final.keras", VARIANT_MODEL.format(variant=variant.name))
            storage.write_text(VARIANT_HISTORY.format(variant=variant.name), json.dumps(histories))
    log(f"built {names} in {time.monotonic() - started:.0f} s")


def variant_batches(variants: list[Variant], concurrency: int) -> list[list[Variant]]:
    """The fine-tuned variants split into one batch per trial that runs at once (round robin, in order):
    each trial fine-tunes its batch in turn in one Ray Train run, so a sweep pays one worker-group start
    per concurrent trial instead of one per variant."""
    count = max(1, min(concurrency, len(variants)))
    return [variants[first::count] for first in range(count)]


def batch_config(batch: list[Variant]) -> dict:
    """A variant trial's config: its variants, named after them (a lone variant's trial is its name)."""
    name = batch[0].name if len(batch) == 1 else f"{batch[0].name}+{len(batch) - 1}"
    return {"name": name, "variants": [{"name": v.name, "scale": vars(v.scale), "pipeline_name": v.pipeline_name,
                                        "pipeline": [step.model_dump(mode="json") for step in v.pipeline]}
                                       for v in batch]}


def variant_trial(config: dict, spec_dump: dict, prepared: PreparedData, storage_uri: str,
                  fail_trial: str | None = None) -> None:
    """A batch of variants with fine-tuning steps, as a Tune trial: one Ray Train run fits them in turn.

    `fail_trial` names a variant whose trial raises at once: the fault-injection hook
    the reliability tests use (set by SWEETSPOT_FAIL_TRIAL in the driver).
    """
    variants = [Variant(Scale(**v["scale"]), v["pipeline_name"], tuple(parse_steps(v["pipeline"])))
                for v in config["variants"]]
    if fail_trial in {v.name for v in variants}:
        raise RuntimeError(f"injected failure in trial {fail_trial} (SWEETSPOT_FAIL_TRIAL)")
    store_variants(SweepJob.model_validate(spec_dump), prepared, RunStorage(storage_uri), variants,
                   callbacks=[TuneReportCallback()])
    tune.report({"done": 1})


def fine_tune_variants(spec: SweepJob, prepared, storage: RunStorage, variants: list[Variant],
                       concurrency: int) -> dict[str, str]:
    """Build the fine-tuned variants as Tune trials, a batch per concurrent trial; variant name -> error.

    A batch that failed runs again one variant per trial, so only the variant at
    fault is reported failed; its batch-mates' finished steps are not fitted again.
    """
    batches = variant_batches(variants, concurrency)
    errors = trial_errors(run_grid(variant_trial, [batch_config(b) for b in batches], spec, prepared, storage,
                                   "variants", concurrency))
    alone = [v for b in batches if len(b) > 1 and batch_config(b)["name"] in errors for v in b
             if not storage.exists(VARIANT_HISTORY.format(variant=v.name))]
    errors = {name: error for name, error in errors.items() if any(v.name == name for v in variants)}
    if alone:
        log(f"a batch of fine-tuned variants failed; building its {len(alone)} unfinished variant(s) one per trial")
        errors.update(trial_errors(run_grid(variant_trial, [batch_config([v]) for v in alone], spec, prepared,
                                            storage, "variants", concurrency)))
    return errors


def candidate_trial(config: dict, spec_dump: dict, prepared: PreparedData, storage_uri: str,
                    fail_trial: str | None = None) -> None:
    """Score one searched candidate: train its scale (once per scale), build its pipeline, measure its file.

    Reports the TFLite file's validation accuracy and gzip size to the search.
    A candidate whose file cannot fit `max_size_kb` (judged from its untrained
    file, `cluster.tuning.size_probe`) is never trained.
    """
    spec, storage = SweepJob.model_validate(spec_dump), RunStorage(storage_uri)
    candidate = candidate_of(config, spec.search)
    variant = candidate.variant
    if fail_trial == variant.name:
        raise RuntimeError(f"injected failure in trial {fail_trial} (SWEETSPOT_FAIL_TRIAL)")
    score_path, skip_path = SCORE.format(variant=variant.name), SKIPPED.format(variant=variant.name)
    for path in (score_path, skip_path):  # the same candidate proposed again, or an earlier attempt's
        if storage.exists(path):
            tune.report(_reported(json.loads(storage.read_text(path))))
            return
    shape = ModelShape(tuple(spec.data.image_shape), spec.data.num_classes)
    bound = size_floor(variant.scale, variant.pipeline, shape, spec.search.dropout) \
        if spec.constraints.max_size_kb is not None else 0
    if spec.constraints.max_size_kb is not None and bound > spec.constraints.max_size_kb * 1000:
        log(f"{variant.name}: skipped, its file cannot fit {spec.constraints.max_size_kb:g} KB "
            f"(expected at {bound / 1000:.1f} KB or more)")
        skip = {"val_accuracy": 0.0, "size_bytes_gzip": float(bound), "skipped": 1, "name": variant.name,
                "config": config}
        storage.write_text(skip_path, json.dumps(skip))
        tune.report(_reported(skip))
        return
    log(f"candidate {variant.name}")
    if not storage.exists(SCALE_HISTORY.format(scale=variant.scale.name)):
        job = scale_train_job(spec, variant.scale)
        result, _ = run_training(train_loop_per_worker, {"spec": job.model_dump(mode="json")}, job, prepared,
                                 spec.train.seed, storage_path=storage.path("trials"), run_name=variant.scale.name)
        export_scale(spec, storage, variant.scale, result.checkpoint)
    baseline = fetch_local(storage.path(SCALE_MODEL.format(scale=variant.scale.name)))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if variant.is_float:
            tflite_path = export_tflite(load_keras_model(baseline, own_file=True), scratch / "model.tflite")
        else:
            fine_tune = TrainSpec.model_validate({**spec.fine_tune.model_dump(), "epochs": candidate.fine_tune_epochs})
            representative = representative_images(prepared, spec.data, spec.representative_samples)
            plan = plan_variant(spec, fine_tune, variant.name, list(variant.pipeline), prepared,
                                distill_train=spec.train)
            ((_, model, tflite_path, histories),) = build_variants(
                spec, [plan], fine_tune.seed, {plan.name: baseline}, prepared, representative, storage, scratch,
                run_root="trials", run_name=f"{variant.name}/{FINE_TUNING_RUN}")
            save_keras_model(model, scratch / "final.keras")
            storage.upload(scratch / "final.keras", VARIANT_MODEL.format(variant=variant.name))
            storage.write_text(VARIANT_HISTORY.format(variant=variant.name), json.dumps(histories))
        images, labels = validation_arrays(prepared, spec.data)
        score = {"val_accuracy": TFLiteModel(tflite_path, num_threads=1).accuracy(images, labels),
                 "size_bytes_gzip": float(gzip_size_bytes(tflite_path)), "skipped": 0, "name": variant.name,
                 "config": config}
        storage.upload(tflite_path, VARIANT_TFLITE.format(variant=variant.name))
    storage.write_text(score_path, json.dumps(score))
    log(f"{variant.name}: validation accuracy {score['val_accuracy']:.4f}, {score['size_bytes_gzip'] / 1000:.1f} KB")
    tune.report(_reported(score))


def _reported(record: dict) -> dict:
    """What a candidate reports to Tune: its record without the config (Tune has it)."""
    return {key: value for key, value in record.items() if key != "config"}


def recorded_candidates(storage: RunStorage) -> list[dict]:
    """Every candidate an attempt of this sweep scored or skipped, with its config."""
    records = [json.loads(storage.read_text(f"{folder}/{name}")) for folder in ("scores", "skipped")
               for name in storage.names(folder) if name.endswith(".json")]
    return [record for record in records if "config" in record]  # older scores lack it: proposed again


# ---------------------------------------------------------------- driver


def run_tune(trainable, spec: SweepJob, prepared, storage: RunStorage, experiment: str,
             tune_config: tune.TuneConfig, param_space: dict | None = None):
    """One fresh Tune experiment (`tune/<experiment>-<attempt>`).

    Never restored from Tune's own state: that is pickled, and a storage root
    others can write would run their code here. A resubmitted sweep resumes from
    what its trials wrote instead (histories, scores, Ray Train checkpoints), so
    each attempt only runs the trials that have not finished.
    """
    attempt = 1 + sum(name.startswith(f"{experiment}-") for name in storage.names("tune"))
    name = f"{experiment}-{attempt}"
    path = storage.path(f"tune/{name}")
    trainable = tune.with_resources(
        tune.with_parameters(trainable, spec_dump=spec.model_dump(mode="json"), prepared=prepared,
                             storage_uri=storage.path(), fail_trial=os.environ.get("SWEETSPOT_FAIL_TRIAL")),
        {"cpu": spec.tune.trial_driver_cpus})
    tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                       run_config=tune.RunConfig(name=name, storage_path=storage.path("tune"),
                                                 failure_config=tune.FailureConfig(max_failures=0), verbose=0))
    try:
        return tuner.fit()
    except FileNotFoundError as error:
        # Seen under `ray job submit`: by the end of the run this process's working
        # directory is gone, so Tune's listing (os.path.relpath -> getcwd) fails after
        # every trial finished and was recorded. Read the results back from a real directory.
        log(f"Tune could not list {path} at the end of the run ({error}); reading its results back")
        os.chdir(os.path.expanduser("~"))
        return ResultGrid(ExperimentAnalysis(path))


def run_grid(trainable, configs: list[dict], spec: SweepJob, prepared, storage: RunStorage, experiment: str,
             concurrency: int, scheduler=None):
    """A Tune experiment with one trial per config (the grid)."""
    return run_tune(unwrap(trainable), spec, prepared, storage, experiment,
                    tune.TuneConfig(max_concurrent_trials=concurrency, scheduler=scheduler),
                    param_space={"variant": tune.grid_search(configs)})


def asha_scheduler(spec: SweepJob, validation_rows: int) -> NoiseAwareASHA:
    """ASHA on validation accuracy, one rung per `grace_epochs x reduction_factor^k` epochs;
    a stop needs a gap larger than the validation set's standard error."""
    return NoiseAwareASHA(validation_rows, metric="val_accuracy", mode="max", time_attr="epoch",
                          max_t=spec.train.epochs, grace_period=spec.tune.grace_epochs,
                          reduction_factor=spec.tune.reduction_factor)


def smallest_first(scales: list[Scale], data) -> list[Scale]:
    """Scales ordered by parameter count, fewest first."""
    shape = ModelShape(tuple(data.image_shape), data.num_classes)
    return sorted(scales, key=lambda s: compute_profile(build_model(s.family, shape, s.width, s.depth)).params)


def unwrap(trainable):
    """Tune's grid puts each trial's config under "variant"."""
    def trial(config, **kwargs):
        return trainable(config["variant"], **kwargs)
    trial.__name__ = trainable.__name__
    return trial


def record_failures(storage: RunStorage, errors: dict[str, str]) -> None:
    for name, error in errors.items():
        storage.write_text(FAILED.format(trial=name), json.dumps({"error": error}))


def recorded_failures(storage: RunStorage) -> dict[str, str]:
    """Trial name -> its error, for every trial that failed in any attempt of this sweep."""
    return {name.removesuffix(".json"): json.loads(storage.read_text(f"failed/{name}"))["error"]
            for name in storage.names("failed") if name.endswith(".json")}


def trial_errors(results) -> dict[str, str]:
    """Variant name -> the last line of its trial's error."""
    errors = {}
    for result in results:
        if result.error is not None:
            errors[result.config["variant"]["name"]] = str(result.error).strip().splitlines()[-1][:500]
    return errors


@dataclass
class Searched:
    """What a search leaves to measure and report."""

    scales: list[Scale]
    variants: list[Variant]
    errors: dict[str, str]
    stopped: list[str]
    figures: dict


def run_sweep(spec: SweepJob) -> SweepSummary:
    storage = RunStorage(run_dir(spec))
    if spec.search.algorithm == "grid":
        scales, variants = expand(spec.search, spec.train.seed)
        check_reachable(spec.constraints, scales, variants, spec.data.image_shape, spec.data.num_classes)
        size_plan = plan_sizes(spec, storage, scales, variants)
    log(f"checking data: {spec.data.train} and {spec.data.test}")
    prepared = prepare(spec.data, spec.train.seed)
    ray.init(ignore_reinit_error=True)
    budget = plan_concurrency(spec.scaling, spec.tune, Capacity.of_cluster())
    log(budget.explanation)
    claim_run_folder(spec, storage)
    if spec.search.algorithm == "grid":
        log(f"search space: {len(scales)} scale(s), {len(variants)} variant(s)")
        searched = grid_search(spec, prepared, storage, budget.concurrency, scales, variants, size_plan)
    else:
        log(f"searching {spec.search.num_samples} candidate(s) with Optuna (accuracy up, gzip size down)")
        searched = optuna_search(spec, prepared, storage, budget.concurrency)
    rows = measure_all(spec, prepared, storage, searched.variants)
    summary = sweep_summary(spec, storage, rows, searched).model_copy(
        update={"test_images_in_train": prepared.test_in_train})
    write_report(summary, storage)
    log(verdict(summary))
    return summary


def plan_sizes(spec: SweepJob, storage: RunStorage, scales: list[Scale], variants: list[Variant]) -> SizePlan | None:
    """Each variant's expected smallest file under `max_size_kb` (recorded even when `train_too_large` trains
    every scale); refused when no scale can fit and none is trained yet (a resumed sweep rechooses among
    what it trained)."""
    if spec.constraints.max_size_kb is None:
        return None
    limit = spec.constraints.max_size_kb
    log(f"judging each variant's file size from its freshly built model (max_size_kb {limit:g})")
    shape = ModelShape(tuple(spec.data.image_shape), spec.data.num_classes)
    plan = plan_by_size(scales, variants, shape, limit * 1000, spec.search.dropout)
    if spec.search.train_too_large:
        return SizePlan(plan.floors, [])
    trained = any(storage.exists(SCALE_MODEL.format(scale=s.name)) for s in scales)
    if len(plan.too_large) == len(scales) and not trained:
        smallest = min(plan.floors, key=plan.floors.get)
        raise UnreachableConstraint(
            f"constraints.max_size_kb={limit:g} but the smallest file of the search space, {smallest}, is expected "
            f"at {plan.floors[smallest] / 1000:.1f} KB or more (judged from its untrained model): no variant can "
            "fit; add smaller widths or stronger compression, or set search.train_too_large: true")
    return plan


def grid_search(spec: SweepJob, prepared, storage: RunStorage, concurrency: int, scales: list[Scale],
                variants: list[Variant], size_plan: SizePlan | None) -> Searched:
    """Every scale that can give a file within max_size_kb (ASHA may stop weak ones), then every
    pipeline on every trained scale."""
    scheduler = (asha_scheduler(spec, prepared.plan.validation_rows)
                 if spec.tune.scheduler == "asha" else None)
    all_scales = scales
    # A scale already trained (a resumed sweep whose constraints changed) is used, whatever the plan says.
    too_large = [s for s in size_plan.too_large if not storage.exists(SCALE_MODEL.format(scale=s.name))] \
        if size_plan else []
    for scale in too_large:
        smallest = min(size_plan.floors[v.name] for v in variants if v.scale == scale)
        log(f"{scale.name}: not trained, none of its variants can fit {spec.constraints.max_size_kb:g} KB "
            f"(the smallest is expected at {smallest / 1000:.1f} KB or more; search.train_too_large trains it)")
    scales = [s for s in scales if s not in too_large]
    for scale in scales:  # trained to the end by an earlier attempt whose driver died before exporting it
        if not settled(storage, scale) and (checkpoint := final_checkpoint(spec, storage, scale)) is not None:
            export_scale(spec, storage, scale, checkpoint)
    failed = recorded_failures(storage)
    pending = [s for s in scales if not settled(storage, s) and s.name not in failed]
    if len(pending) < len(scales):
        log(f"resuming: {len(scales) - len(pending)} of {len(scales)} scale trial(s) finished in an earlier attempt")
    if failed:
        log(f"not run again, failed in an earlier attempt: {', '.join(sorted(failed))} (delete "
            f"{storage.path('failed')}/<name>.json to retry one)")
    if pending:
        # Smallest scale first: ASHA compares each trial with those already seen at the same
        # epoch, so a larger scale keeps its budget only by beating the smaller ones; a
        # small scale (the one a size constraint needs) is never cut by a bigger one.
        configs = [{"name": s.name, "scale": vars(s)} for s in smallest_first(pending, spec.data)]
        results = run_grid(scale_trial, configs, spec, prepared, storage, "scales", concurrency, scheduler)
        record_failures(storage, trial_errors(results))
        for result in results:
            scale = Scale(**result.config["variant"]["scale"])
            if result.error is not None:
                continue
            if (checkpoint := final_checkpoint(spec, storage, scale)) is not None:
                export_scale(spec, storage, scale, checkpoint)
            else:  # stopped early by ASHA: recorded, so a resubmitted sweep does not train it again
                storage.write_text(STOPPED.format(scale=scale.name),
                                   json.dumps({"epochs": int((result.metrics or {}).get("epoch", 0))}))
    trained = [s for s in all_scales if storage.exists(SCALE_HISTORY.format(scale=s.name))]
    stopped = [s.name for s in scales if storage.exists(STOPPED.format(scale=s.name))]
    epochs = {s.name: trained_epochs(storage, s) for s in all_scales if settled(storage, s)}
    compressed = [v for v in variants if not v.is_float and v.scale in trained]
    # A pipeline with nothing to fine-tune (post-training quantization) converts in seconds: built here,
    # it pays no trial process and TensorFlow start. The others are trials, each step a Ray Train run.
    fine_tuned = [v for v in compressed if any(step.fine_tuned for step in v.pipeline)]
    for variant in compressed:
        if variant not in fine_tuned and variant.name not in failed:
            try:
                store_variants(spec, prepared, storage, [variant])
            except Exception as error:  # reported with the variant, like a failed trial; the sweep goes on
                record_failures(storage, {variant.name: f"{type(error).__name__}: {error}"[:500]})
    fine_tuned = [v for v in fine_tuned
                  if not storage.exists(VARIANT_HISTORY.format(variant=v.name)) and v.name not in failed]
    if fine_tuned:
        record_failures(storage, fine_tune_variants(spec, prepared, storage, fine_tuned, concurrency))
    errors = recorded_failures(storage)
    return Searched(all_scales, [v for v in variants if v.scale in trained], errors, stopped, {
        "scale_trial_epochs": epochs, "scale_trial_epochs_used": sum(epochs.values()),
        "scale_trial_epochs_full_grid": len(all_scales) * spec.train.epochs,
        "size_floors": size_plan.floors if size_plan else {}, "skipped_too_large": [s.name for s in too_large]})


def optuna_search(spec: SweepJob, prepared, storage: RunStorage, concurrency: int) -> Searched:
    """Optuna's multi-objective sampler (through Ray Tune) proposes candidates; each trial scores one.

    Every scale a candidate trained also enters the results as its float variant.
    """
    search = spec.search
    earlier = recorded_candidates(storage)
    remaining = search.num_samples - len(earlier)
    if earlier:
        log(f"resuming: {len(earlier)} of {search.num_samples} candidate(s) scored in an earlier attempt; the "
            "search starts from their scores")
    errors, trials = {}, len(earlier)
    if remaining > 0:
        searcher = OptunaSearch(DefineSpace(search), metric=["val_accuracy", "size_bytes_gzip"], mode=["max", "min"],
                                points_to_evaluate=seed_points(search) if search.seed_candidates and not earlier
                                else None, seed=spec.train.seed, study_name=STUDY_NAME,
                                storage=study_storage(search, earlier))
        results = run_tune(candidate_trial, spec, prepared, storage, "candidates",
                           tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                           max_concurrent_trials=concurrency, time_budget_s=search.time_budget_s))
        trials += len(results)
        for result in results:
            if result.error is not None:
                name = candidate_of(result.config, search).variant.name
                errors[name] = str(result.error).strip().splitlines()[-1][:500]
    records = recorded_candidates(storage)
    candidates = {r["name"]: candidate_of(r["config"], search) for r in records if not r["skipped"]}
    skipped = [r["name"] for r in records if r["skipped"]]
    # The scales trained: each candidate's own, or the teacher a distilled candidate started from.
    scales = sorted({c.variant.scale for c in candidates.values()}, key=lambda s: s.name)
    scales = [s for s in scales if storage.exists(SCALE_HISTORY.format(scale=s.name))]
    variants = {v.name: v for v in [Variant(s, "float", ()) for s in scales]}
    variants.update({name: c.variant for name, c in candidates.items() if c.variant.scale in scales})
    return Searched(scales, list(variants.values()), errors, [], {"search": {
        "algorithm": "optuna", "trials": trials, "scored": sorted(candidates),
        "skipped_by_size_bound": sorted(set(skipped)), "scales_trained": [s.name for s in scales]}})


def measure_all(spec: SweepJob, prepared, storage: RunStorage, variants: list[Variant]) -> list[VariantResult]:
    """Every variant's artifact measured here, one after another: same node, same threads, fair ratios."""
    images, labels = load_arrays(prepared.test_source, spec.data)
    rows = []
    for variant in variants:
        record = RECORD.format(variant=variant.name)
        if storage.exists(record):
            rows.append(VariantResult.model_validate_json(storage.read_text(record)))
            continue
        if variant.is_float:
            keras_path = fetch_local(storage.path(SCALE_MODEL.format(scale=variant.scale.name)))
            model = load_keras_model(keras_path, own_file=True)
            with tempfile.TemporaryDirectory() as scratch:
                tflite = export_tflite(model, Path(scratch) / "model.tflite")
                storage.upload(tflite, VARIANT_TFLITE.format(variant=variant.name))
        tflite = fetch_local(storage.path(VARIANT_TFLITE.format(variant=variant.name)))
        if tflite is None:
            continue  # its trial failed; reported with its error
        keras_path = fetch_local(storage.path(VARIANT_MODEL.format(variant=variant.name))) if not variant.is_float \
            else keras_path
        model = load_keras_model(keras_path, own_file=True) if keras_path else None
        extra = {"technique": techniques(variant.pipeline), "scale": vars(variant.scale),
                 "scale_name": variant.scale.name, "pipeline": [step.model_dump(mode="json") for step in variant.pipeline]}
        row = measure(variant.name, Path(tflite), model, images, labels, spec.evaluation, extra)
        row.artifact = storage.path(VARIANT_TFLITE.format(variant=variant.name))
        storage.write_text(record, row.model_dump_json())
        rows.append(row)
        log(f"measured {variant.name}: accuracy {row.accuracy:.4f}, {row.size_bytes_gzip} B gzip, "
            f"p95 {row.latency_ms_p95:.3f} ms")
    return rows


def sweep_summary(spec: SweepJob, storage: RunStorage, rows: list[VariantResult], searched: Searched) -> SweepSummary:
    floats = [r for r in rows if r.technique == "float"]
    base = max(floats, key=lambda r: r.accuracy) if floats else None
    rows = [row.compared_with(base) for row in rows]
    plain = [row.model_dump() for row in rows]  # what the constraint and frontier arithmetic reads
    constraints = spec.constraints.model_dump()
    choice = choose(plain, constraints, spec.objective.metric)
    learning = {}
    for scale in searched.scales:
        if storage.exists(SCALE_HISTORY.format(scale=scale.name)):
            learning[scale.name] = json.loads(storage.read_text(SCALE_HISTORY.format(scale=scale.name)))
    for variant in searched.variants:
        if storage.exists(VARIANT_HISTORY.format(variant=variant.name)):
            for step, history in json.loads(storage.read_text(VARIANT_HISTORY.format(variant=variant.name))).items():
                learning[f"{variant.name}/{step}"] = history
    summary = SweepSummary(
        name=spec.name, baseline=base.name if base else None, variants=rows,
        pareto={cost: pareto_front(plain, cost) for cost in ("size_bytes_gzip", "latency_ms_p95")},
        sweet_spot=choice.sweet_spot, closest=choice.closest, closest_violations=choice.closest_violations,
        feasible=choice.feasible, constraints=constraints, objective=spec.objective.metric,
        failed=[FailedTrial(name=name, error=error) for name, error in sorted(searched.errors.items())],
        stopped_early=searched.stopped, num_threads=spec.evaluation.num_threads, learning_curves=learning,
        references=[ReferencePoint(name=r.name, accuracy=r.accuracy, params=r.params, latency_ms_p95=r.latency_ms_p95,
                                   size_bytes_gzip=None if r.size_kb is None else r.size_kb * 1000, source=r.source)
                    for r in spec.references],
        artifacts={"summary": storage.path("summary.json"), "report_md": storage.path("report.md"),
                   "report": storage.path("report.html")},
        **searched.figures)
    best = summary.variant(choice.sweet_spot)
    if best is not None:
        data = Path(fetch_local(best.artifact)).read_bytes()
        summary.artifacts["best"] = storage.write_bytes("best.tflite", data)
    return summary


def write_report(summary: SweepSummary, storage: RunStorage) -> None:
    storage.write_text("report.md", markdown(summary))
    storage.write_text("report.html", html_page(summary))
    storage.write_text("summary.json", summary.model_dump_json(indent=2))

"""`kind: compress`: build each listed variant from a trained baseline, export it, measure the artifact.

Each variant is an ordered pipeline (e.g. distill -> prune -> quantize). The
steps that need fine-tuning (distill, prune, cluster, qat), of all variants,
are fitted in turn in one Ray Train run over the same streaming data pipeline
and scaling as training, each starting from the previous step's model; the
driver then walks each pipeline again with the fitted weights (strips
wrappers, takes the student). The last model is converted to TFLite and every
figure in the report is measured on that file.

Results under `<output.storage>/<name>/`:
    spec.yaml, summary.json, report.md
    baseline/model.tflite                       the float baseline, for the ratios
    variants/<variant>/model.tflite             the deployable artifact
    variants/<variant>/model.keras              the finalized Keras model (float, where it can be saved)
    variants/<variant>/record.json              its measured row (a rerun skips finished variants)
    variants/<variant>/step<k>-<technique>/     the fitted weights of each fine-tuned step
    variants/_fine-tuning/                      the Ray Train run that fitted them
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray

from cluster.compression.errors import CompressionError
from cluster.compression.pipeline import check_model
from cluster.compression.steps import has_qat, techniques
from cluster.data.pipeline import load_arrays, prepare, representative_images
from cluster.evaluation.measure import measure
from cluster.evaluation.export import export_tflite
from cluster.results import CompressSummary, SweepSummary, VariantResult, read_summary
from cluster.tables import variant_table
from cluster.models import ModelFileError, load_keras_model, save_keras_model
from cluster.spec import CompressJob
from cluster.storage import RunStorage, fetch_local
from cluster.training.resources import Capacity, check_training_fits
from cluster.training.batches import steps_per_epoch
from cluster.training.variants import build_variants, plan_variant
from cluster.runs import JobFailed, claim_run_folder, log


def baseline_model_path(baseline: str) -> str:
    """A local .keras file for the baseline: a saved model, a train job's folder (its `model.keras`),
    or a sweep's folder (its baseline scale's model)."""
    if baseline.endswith((".keras", ".h5")):
        local = fetch_local(baseline)
    else:
        root = baseline.rstrip("/")
        summary = fetch_local(f"{root}/summary.json")
        sweep = read_summary(json.loads(Path(summary).read_text())) if summary else None
        if isinstance(sweep, SweepSummary):
            if sweep.baseline_model is None:
                raise JobFailed(f"baseline: the sweep at {baseline} has no trained float scale to start from")
            local = fetch_local(f"{root}/{sweep.baseline_model}")
        else:
            local = fetch_local(f"{root}/model.keras")
    if local is None:
        raise JobFailed(f"baseline: {baseline} is neither a train or sweep job's result folder "
                        "nor a saved Keras model file")
    return local


def check_fits_data(model, spec: CompressJob) -> None:
    expected, classes = tuple(spec.data.image_shape), spec.data.num_classes
    if tuple(model.input_shape[1:]) != expected:
        raise JobFailed(f"baseline: the model takes inputs of shape {list(model.input_shape[1:])}, "
                        f"the data has images of {list(expected)} (data.image_shape)")
    if model.output_shape[-1] != classes:
        raise JobFailed(f"baseline: the model has {model.output_shape[-1]} outputs, the data "
                        f"{classes} classes (data.num_classes)")


def run_compress(spec: CompressJob) -> dict:
    storage = RunStorage(f"{spec.output.storage.rstrip('/')}/{spec.name}")
    baseline_path = baseline_model_path(spec.baseline)
    try:
        baseline = load_keras_model(baseline_path, trust_code=spec.trust_model_code)
    except ModelFileError as error:
        raise JobFailed(f"baseline: {error}") from None
    check_fits_data(baseline, spec)
    for variant in spec.variants:
        # Every technique must find layers it supports before any cluster time is spent.
        try:
            check_model(variant.pipeline, baseline)
        except CompressionError as error:
            raise JobFailed(f"variants.{variant.name}: {error}") from None
    log(f"checking data: {spec.data.train} and {spec.data.test}")
    prepared = prepare(spec.data, spec.fine_tune.seed)
    for variant in spec.variants:
        tune = spec.fine_tune_of(variant)
        if steps_per_epoch(prepared.plan.train_rows, spec.scaling, tune.global_batch_size) == 0:
            raise JobFailed(f"variants.{variant.name}: fine_tune.global_batch_size ({tune.global_batch_size}) "
                            f"exceeds the {prepared.plan.train_rows} training rows")
    ray.init(ignore_reinit_error=True)
    check_training_fits(spec.scaling, Capacity.of_cluster())
    claim_run_folder(spec, storage)  # every check has passed: the first write

    images, labels = load_arrays(prepared.test_source, spec.data)
    representative = representative_images(prepared, spec.data, spec.representative_samples)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        baseline_tflite = export_tflite(baseline, scratch / "baseline.tflite")
        row = measure("baseline", baseline_tflite, baseline, images, labels, spec.evaluation,
                      {"technique": "float", "pipeline": []})
        row.artifact = storage.upload(baseline_tflite, "baseline/model.tflite")
        rows.append(row)
        pending = []
        for variant in spec.variants:
            record = f"variants/{variant.name}/record.json"
            if storage.exists(record):
                measured = VariantResult.model_validate_json(storage.read_text(record))
                if measured.extra.get("recipe") == recipe_of(spec, variant):
                    log(f"{variant.name}: already measured, skipping")
                    rows.append(measured)
                    continue
                log(f"{variant.name}: its recipe changed since it was measured; building it again")
            pending.append(variant)
        plans = [plan_variant(spec, spec.fine_tune_of(variant), variant.name, variant.pipeline, prepared)
                 for variant in pending]
        built = build_variants(spec, plans, spec.fine_tune.seed, {plan.name: baseline_path for plan in plans},
                               prepared, representative, storage, scratch, trust_code=spec.trust_model_code)
        for variant, (_plan, model, tflite_path, histories) in zip(pending, built):
            recipe = recipe_of(spec, variant)
            extra = {"technique": techniques(variant.pipeline), "pipeline": recipe["pipeline"],
                     "recipe": recipe, "fine_tune_history": histories}
            row = measure(variant.name, tflite_path, model, images, labels, spec.evaluation, extra)
            row.artifact = storage.upload(tflite_path, f"variants/{variant.name}/model.tflite")
            keras_path = scratch / f"{variant.name}.keras"
            if not has_qat(variant.pipeline):
                save_keras_model(model, keras_path)
                row.keras_model = storage.upload(keras_path, f"variants/{variant.name}/model.keras")
            storage.write_text(f"variants/{variant.name}/record.json", row.model_dump_json(indent=1))
            rows.append(row)
            log(f"{variant.name}: TFLite accuracy {row.accuracy:.4f}, {row.size_bytes_gzip} B gzip")
        # Measured in spec order, whichever were measured before.
        order = {variant.name: position for position, variant in enumerate(spec.variants)}
        rows[1:] = sorted(rows[1:], key=lambda row: order[row.name])

    summary = CompressSummary(name=spec.name, baseline="baseline", baseline_source=spec.baseline,
                              variants=[row.compared_with(rows[0]) for row in rows],
                              test_images_in_train=prepared.test_in_train,
                              artifacts={"summary": storage.path("summary.json"), "report": storage.path("report.md")})
    storage.write_text("summary.json", summary.model_dump_json(indent=2))
    storage.write_text("report.md", compress_report(summary))
    return summary


def recipe_of(spec: CompressJob, variant) -> dict:
    """What a variant's measured record must match to be reused: its pipeline and fine-tuning recipe."""
    return {"pipeline": [step.model_dump(mode="json") for step in variant.pipeline],
            "fine_tune": spec.fine_tune_of(variant).model_dump(mode="json")}


def compress_report(summary: CompressSummary) -> str:
    return "\n".join([f"# {summary.name}: compressed variants", "",
                      "Every figure is measured on the TFLite file (accuracy: the interpreter over the whole test "
                      "split; ×: gzip size of the float baseline / gzip size of the variant; Δpt: accuracy "
                      "against the baseline, in points).", "", variant_table(summary, wide=True, markdown=True), ""])

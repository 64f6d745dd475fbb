"""`kind: evaluate`: measure given artifacts (TFLite files, Keras models) on a test split, side by side.

Every artifact is checked (it exists, loads, takes the data's image shape and
gives one output per class) before any cluster time is spent. Then one Ray
task, pinned to `cpus`, measures them one after another on one node, so their
latency and throughput ratios are fair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ray

from cluster.data.checks import check_split
from cluster.data.pipeline import load_arrays
from cluster.data.sources import resolve
from cluster.evaluation.errors import ArtifactError
from cluster.results import EvaluateSummary, VariantResult
from cluster.tables import variant_table
from cluster.spec import EvaluateJob
from cluster.storage import RunStorage, fetch_local
from cluster.runs import claim_run_folder, log


def local_artifact(path: str) -> str:
    """A local copy of the artifact (a SavedModel folder must be local)."""
    expanded = str(Path(path).expanduser())
    if Path(expanded).is_dir():
        return expanded
    local = fetch_local(path)
    if local is None:
        raise ArtifactError(path, "artifact not found")
    return local


def check_artifact(name: str, path: str, image_shape: tuple, num_classes: int, trust_code: bool = False) -> str:
    """'tflite' or 'keras', after checking the artifact fits the data; ArtifactError names the file."""
    if path.endswith(".tflite"):
        from cluster.evaluation.tflite import TFLiteModel

        model = TFLiteModel(path)
        shape, outputs = tuple(model.sample_shape), model.interpreter.get_output_details()[0]["shape"][-1]
        kind = "tflite"
    else:
        from cluster.models import ModelFileError, load_keras_model

        try:
            model = load_keras_model(path, trust_code=trust_code)
        except ModelFileError as error:
            raise ArtifactError(path, str(error)) from None
        shape, outputs = tuple(model.input_shape[1:]), model.output_shape[-1]
        kind = "keras"
    if shape != tuple(image_shape):
        raise ArtifactError(path, f"artifact {name!r} takes inputs of shape {list(shape)}, the test data has "
                                  f"{list(image_shape)} (data.image_shape)")
    if outputs != num_classes:
        raise ArtifactError(path, f"artifact {name!r} has {outputs} outputs, the data {num_classes} classes")
    return kind


def measure_keras(name: str, path: str, images, labels, evaluation, trust_code: bool = False) -> VariantResult:
    from cluster.evaluation.compute import compute_profile
    from cluster.evaluation.files import gzip_size_bytes, size_bytes
    from cluster.evaluation.keras_latency import measure_keras_model, runs_on_threads
    from cluster.evaluation.memory import measure_peak_rss
    from cluster.models import compile_classifier, load_keras_model
    from cluster.tf_datasets import in_memory_batches

    runs_on_threads(evaluation.num_threads)  # before loading the model runs an op: then it is timed here
    model = load_keras_model(path, trust_code=trust_code)
    compile_classifier(model, "adam", model.output_shape[-1])
    profile = compute_profile(model)
    latency = measure_keras_model(model, path, num_threads=evaluation.num_threads,
                                  batch_sizes=tuple(evaluation.batch_sizes), repetitions=evaluation.repetitions,
                                  min_seconds=evaluation.min_seconds, trust_code=trust_code)
    files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
    record = VariantResult(
        name=name, artifact=path, params=profile.params, params_nonzero=profile.params_nonzero,
        flops=profile.flops, flops_sparse=profile.flops_sparse, size_bytes=sum(size_bytes(f) for f in files),
        size_bytes_gzip=sum(gzip_size_bytes(f) for f in files),
        latency_ms_p50=latency.latency_ms_p50, latency_ms_p95=latency.latency_ms_p95,
        latency_ms_p99=latency.latency_ms_p99, throughput_sps={str(b): v for b, v in latency.throughput_sps.items()},
        num_threads=latency.num_threads, accuracy=float(model.evaluate(in_memory_batches(images, labels, 512), verbose=0)[1]),
        num_test_samples=len(labels), batch_sizes=list(latency.batch_sizes), repetitions=latency.repetitions,
        extra={"format": "keras"})
    if evaluation.memory:
        record.peak_rss_bytes = measure_peak_rss(path, images=images[:256], trust_code=trust_code).peak_rss_bytes
    return record


def measure_all(artifacts: list[tuple[str, str, str]], images: np.ndarray, labels: np.ndarray,
                evaluation, trust_code: bool = False) -> list[VariantResult]:
    """Runs inside one Ray task: every artifact measured in turn, on the same node and cores."""
    from cluster.evaluation.measure import measure

    rows = []
    for name, path, kind in artifacts:
        if kind == "tflite":
            row = measure(name, Path(path), None, images, labels, evaluation, {"format": "tflite"})
        else:
            row = measure_keras(name, path, images, labels, evaluation, trust_code)
        row.node = ray.get_runtime_context().get_node_id()
        rows.append(row)
    return rows


def run_evaluate(spec: EvaluateJob) -> dict:
    storage = RunStorage(f"{spec.output.storage.rstrip('/')}/{spec.name}")
    artifacts = []
    for position, artifact in enumerate(spec.artifacts):
        local = local_artifact(artifact.path)
        artifacts.append((artifact.name, local, check_artifact(artifact.name, local, spec.data.image_shape,
                                                               spec.data.num_classes, spec.trust_model_code)))
    source = resolve(spec.data.test, "data.test")
    check_split(source, spec.data.image_column, spec.data.label_column, spec.data.num_classes,
                tuple(spec.data.image_shape), "data.test", keep_pixels=True)
    images, labels = load_arrays(source, spec.data)
    ray.init(ignore_reinit_error=True)
    claim_run_folder(spec, storage)  # every check has passed: the first write
    log(f"measuring {len(artifacts)} artifact(s) in one task on {spec.cpus:g} CPU(s)")
    task = ray.remote(num_cpus=spec.cpus)(measure_all)
    rows = ray.get(task.remote(artifacts, images, labels, spec.evaluation, spec.trust_model_code))
    for row, artifact in zip(rows, spec.artifacts):
        row.artifact = artifact.path
    summary = EvaluateSummary(name=spec.name, variants=rows, num_threads=spec.evaluation.num_threads,
                              artifacts={"summary": storage.path("summary.json"), "report": storage.path("report.md")})
    table = variant_table(summary, wide=True, markdown=True)
    storage.write_text("report.md", f"# {spec.name}: measured artifacts\n\nAll measured in one Ray task on one "
                                    f"node, {spec.evaluation.num_threads} thread(s).\n\n{table}\n")
    storage.write_text("summary.json", summary.model_dump_json(indent=2))
    log(f"results in {storage.path()}")
    return summary

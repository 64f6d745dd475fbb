"""Measure one deployable artifact the way the spec's `evaluation` section says."""

from __future__ import annotations

from pathlib import Path

from cluster.evaluation.report import measure_artifact
from cluster.evaluation.tensors import unique_value_counts
from cluster.results import VariantResult


def measure(name: str, tflite_path: Path, keras_model, images, labels, evaluation, extra: dict) -> VariantResult:
    """The evaluation record of a TFLite file, plus the sparsity counted in its Keras model."""
    record = measure_artifact(tflite_path, images, labels, name=name, keras_model=keras_model,
                              num_threads=evaluation.num_threads, batch_sizes=tuple(evaluation.batch_sizes),
                              repetitions=evaluation.repetitions, min_seconds=evaluation.min_seconds,
                              measure_memory=evaluation.memory, extra=extra)
    row = VariantResult(**record.model_dump(), technique=extra.get("technique", "float"),
                        unique_values_per_layer=unique_value_counts(tflite_path))
    if keras_model is not None:
        # Imported here: the toolkit costs seconds to import, and a TFLite file alone does not need it.
        from cluster.compression.pruning import measured_sparsity

        report = measured_sparsity(keras_model)
        row.sparsity, row.sparsity_per_layer = report.overall, report.per_layer
    return row

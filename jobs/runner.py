"""Run a validated spec as the job of its kind, turning expected failures into one clear line."""

from __future__ import annotations

import sys

from cluster.admission import held
from cluster.compression.errors import CompressionError
from cluster.data import DataError
from cluster.errors import CheckpointError, ModelBuilderError, TrainingFailed
from cluster.evaluation.errors import ArtifactError
from cluster.runs import JobFailed
from cluster.storage import StorageError, StorageFull
from cluster.training.resources import ResourceError
from cluster.tuning.space import UnreachableConstraint


def check_data(spec) -> None:
    """Read every row of the data before the job starts, so bad data is refused before anything is written.

    The job reads the same splits again from the checks' memory, not from disk.
    """
    from cluster.data.checks import check_plan, check_split
    from cluster.data.pipeline import prepare
    from cluster.data.sources import resolve

    data = spec.data
    if spec.kind == "evaluate":
        check_split(resolve(data.test, "data.test"), data.image_column, data.label_column, data.num_classes,
                    tuple(data.image_shape), "data.test", keep_pixels=True)  # the job measures on all of it
        return
    seed = (spec.fine_tune if spec.kind == "compress" else spec.train).seed
    # A train job also trains on each learning-curve fraction; each must leave every class some rows.
    for fraction in sorted({data.train_fraction, *getattr(spec, "learning_curve", [])}):
        prepared = prepare(data.model_copy(update={"train_fraction": fraction}), seed)
        train = check_split(prepared.train_source, data.image_column, data.label_column, data.num_classes,
                            tuple(data.image_shape), "data.train")
        check_plan(prepared.plan, train.labels, data.validation_fraction)
    for warning in prepared.warnings():
        print(f"warning: {warning}", file=sys.stderr)


def own_builders(spec) -> list[tuple[str, float, int]]:
    """(family, width, depth) of every user builder (module:function) the spec trains."""
    if spec.kind == "train":
        scales = [(spec.model.family, spec.model.width, spec.model.depth)]
    elif spec.kind == "sweep":
        widths, depths = spec.search.widths, spec.search.depths
        width = min(widths) if isinstance(widths, list) else widths.min
        depth = min(depths) if isinstance(depths, list) else depths.min
        scales = [(family, width, depth) for family in spec.search.family_choices]
    else:
        scales = []
    return [scale for scale in scales if ":" in scale[0]]


def check_builders(spec) -> None:
    """Import and call a user's own builder once here, so a broken one fails before any cluster time."""
    builders = own_builders(spec)
    if builders:
        from cluster.models import ModelShape, build_model

        shape = ModelShape(tuple(spec.data.image_shape), spec.data.num_classes)
        for family, width, depth in builders:
            build_model(family, shape, width, depth)


def job_of_kind(kind: str):
    """The function that runs a job of `kind`, with only its own imports: train, compress and sweep load
    TensorFlow; an evaluate job loads it only in its measuring task, and only for a Keras artifact."""
    if kind == "train":
        from cluster.training.train_job import run_train
        return run_train
    if kind == "compress":
        from cluster.training.compress_job import run_compress
        return run_compress
    if kind == "sweep":
        from cluster.tuning.sweep import run_sweep
        return run_sweep
    from cluster.evaluation.evaluate_job import run_evaluate
    return run_evaluate


def run(spec) -> int:
    """0 on success; 2 for bad input (nothing trained); 1 when training itself failed."""
    try:
        check_data(spec)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        check_builders(spec)
        with held(spec):  # a job its submission reserved no resources for waits for its own
            job_of_kind(spec.kind)(spec)
    except (DataError, ResourceError, CheckpointError, StorageError, CompressionError, UnreachableConstraint,
            ArtifactError, JobFailed, ModelBuilderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except StorageFull as error:  # the run failed, not its input: what was written before stays whole
        print(f"error: {error.strerror}", file=sys.stderr)
        return 1
    return 0

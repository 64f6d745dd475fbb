"""An ordered chain of compression steps described by plain dicts.

    pipeline = parse_pipeline([
        {"distill": {"student": {"family": "cnn", "width": 0.5}, "temperature": 4}},
        {"prune": {"final_sparsity": 0.8, "end_step": 2000}},
        {"quantize": {"mode": "int8"}},
    ])
    check_model(pipeline, model)                     # all bad input fails here
    for step in pipeline.steps:
        with strategy.scope():
            prepared = prepare_step(step, model)
            prepared.model.compile(...)
        if prepared.needs_fine_tuning:
            prepared.model.fit(..., callbacks=prepared.callbacks)
        model = finalize_step(step, prepared.model)
    tflite = convert(pipeline, model, representative_data)

Rules: "distill" may only come first (it replaces the model by a fresh
student); "quantize" (post-training) only last; at most one of "qat" and
"quantize". A "qat" step that doesn't say what to preserve preserves what the
steps before it built: sparsity after "prune", clusters after "cluster".
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from cluster import models
from cluster.compression import clustering, pruning, quantization
from cluster.compression.distillation import Distiller, check_compatible, check_parameters
from cluster.compression.errors import CompressionError
from cluster.compression.prepared import Prepared

STUDENT_FIELDS = ("family", "width", "depth", "dropout")


@dataclass(frozen=True)
class DistillConfig:
    """Distill into a student: built from `student` (build_model arguments) or passed to prepare_step."""

    temperature: float = 4.0
    alpha: float = 0.9
    student: Mapping[str, Any] | None = None

    def __post_init__(self):
        check_parameters(self.temperature, self.alpha)
        if self.student is None:
            return
        if not isinstance(self.student, Mapping):
            raise CompressionError(f"must be a mapping of {STUDENT_FIELDS} (got {self.student!r})",
                                   step="distill", field="student")
        unknown = sorted(set(self.student) - set(STUDENT_FIELDS))
        if unknown:
            raise CompressionError(f"unknown student setting(s) {unknown}; known: {STUDENT_FIELDS}",
                                   step="distill", field="student")
        family = self.student.get("family", "cnn")
        if family not in models.FAMILIES:
            raise CompressionError(f"student family must be one of {sorted(models.FAMILIES)} (got {family!r})",
                                   step="distill", field="student")
        width = self.student.get("width", 1.0)
        if not isinstance(width, (int, float)) or width <= 0:
            raise CompressionError(f"student width must be > 0 (got {width!r})", step="distill", field="student")
        depth = self.student.get("depth", 2)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise CompressionError(f"student depth must be an integer >= 1 (got {depth!r})",
                                   step="distill", field="student")

    def build_student(self, teacher: keras.Model) -> keras.Model:
        """A student of the configured family shaped for the teacher's data."""
        shape = models.ModelShape(tuple(teacher.input_shape[1:]), int(teacher.output_shape[-1]))
        settings = dict(self.student)
        family = settings.pop("family", "cnn")
        return models.build_model(family, shape, **settings)


CONFIGS = {
    "distill": DistillConfig,
    "prune": pruning.PruningConfig,
    "cluster": clustering.ClusteringConfig,
    "qat": quantization.QATConfig,
    "quantize": quantization.PostTrainingConfig,
}


@dataclass(frozen=True)
class Step:
    """One technique and its validated configuration."""

    technique: str
    config: Any
    position: int = 1


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    @property
    def conversion(self) -> str:
        """How the final model becomes TFLite: "float", a post-training mode, or "qat"."""
        for step in self.steps:
            if step.technique == "qat":
                return "qat"
            if step.technique == "quantize":
                return step.config.mode
        return "float"


def _split(spec: Any, position: int) -> tuple[str, dict]:
    """{"prune": {...}} -> ("prune", {...}); a Step passes through as (technique, config)."""
    if isinstance(spec, Mapping) and len(spec) == 1:
        technique, params = next(iter(spec.items()))
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise CompressionError(f"parameters must be a mapping (got {params!r})",
                                   step=str(technique), position=position)
        return technique, dict(params)
    raise CompressionError(f"a step is a one-key mapping like {{'prune': {{...}}}} (got {spec!r})",
                           position=position)


def parse_step(spec: Any, position: int = 1, earlier: Sequence[str] = ()) -> Step:
    """Validate one step; `earlier` (techniques before it) decides QAT's default preservation."""
    if isinstance(spec, Step):
        return dataclasses.replace(spec, position=position)
    technique, params = _split(spec, position)
    if technique not in CONFIGS:
        raise CompressionError(f"unknown technique; known: {sorted(CONFIGS)}",
                               step=str(technique), position=position)
    config_class = CONFIGS[technique]
    known = [f.name for f in dataclasses.fields(config_class)]
    for name in params:
        if name not in known:
            raise CompressionError(f"unknown parameter; known: {known}",
                                   step=technique, field=str(name), position=position)
    if technique == "qat" and "preserve" not in params:
        params["preserve"] = _preserve_after(earlier)
    try:
        return Step(technique, config_class(**params), position)
    except CompressionError as error:
        raise error.at_position(position) from None


def _preserve_after(earlier: Sequence[str]) -> str | None:
    pruned, clustered = "prune" in earlier, "cluster" in earlier
    if pruned and clustered:
        return "sparsity_and_clusters"
    return "sparsity" if pruned else "clusters" if clustered else None


def parse_pipeline(specs: Sequence[Any]) -> Pipeline:
    """Validate every step and their order; raises CompressionError naming the first problem."""
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise CompressionError(f"a pipeline is a list of steps (got {specs!r})")
    steps: list[Step] = []
    for index, spec in enumerate(specs):
        step = parse_step(spec, index + 1, [s.technique for s in steps])
        if step.technique == "distill" and steps:
            raise CompressionError("distill must be the first step: it replaces the model "
                                   "by a freshly trained student", step="distill", position=step.position)
        if any(s.technique == "quantize" for s in steps):
            raise CompressionError("quantize (post-training) must be the last step",
                                   step=step.technique, position=step.position)
        if step.technique in ("qat", "quantize") and any(s.technique in ("qat", "quantize") for s in steps):
            raise CompressionError("only one of qat and quantize per pipeline",
                                   step=step.technique, position=step.position)
        steps.append(step)
    return Pipeline(tuple(steps))


def _as_pipeline(pipeline: Pipeline | Sequence[Any]) -> Pipeline:
    return pipeline if isinstance(pipeline, Pipeline) else parse_pipeline(pipeline)


def _as_step(step: Step | Mapping) -> Step:
    return step if isinstance(step, Step) else parse_step(step)


def check_model(pipeline: Pipeline | Sequence[Any], model: keras.Model,
                student: keras.Model | None = None) -> None:
    """Check that every step can apply to the model it will get, before any training.

    Layer support is checked on `model`, or on the student for steps after a
    distill step (built from its settings when no `student` is given).
    """
    pipeline = _as_pipeline(pipeline)
    target = model
    for step in pipeline.steps:
        try:
            if step.technique == "distill":
                target = _student(step, model, student)
                check_compatible(model, target)
            elif step.technique == "prune":
                pruning.prunable_layer_names(target, step.config.exclude)
            elif step.technique == "cluster":
                clustering.clusterable_layer_names(target, step.config)
            elif step.technique == "qat":
                quantization.quantizable_layer_names(target, step.config.exclude)
        except CompressionError as error:
            raise error.at_position(step.position) from None


def _student(step: Step, teacher: keras.Model, student: keras.Model | None) -> keras.Model:
    if student is not None:
        return student
    if step.config.student is None:
        raise CompressionError("give student settings (family, width, depth) or pass a student model",
                               step="distill", field="student", position=step.position)
    return step.config.build_student(teacher)


def prepare_step(step: Step | Mapping, model: keras.Model, student: keras.Model | None = None) -> Prepared:
    """The model to fine-tune for this step, and the callbacks `fit` needs.

    For "distill", `model` is the teacher and the result a `Distiller`. Creates
    variables: call inside `strategy.scope()`, then compile the result.
    """
    step = _as_step(step)
    try:
        if step.technique == "distill":
            distiller = Distiller(model, _student(step, model, student),
                                  temperature=step.config.temperature, alpha=step.config.alpha)
            return Prepared(distiller, [])
        if step.technique == "prune":
            return pruning.prepare_pruning(model, step.config)
        if step.technique == "cluster":
            return clustering.prepare_clustering(model, step.config)
        if step.technique == "qat":
            return quantization.prepare_qat(model, step.config)
        return Prepared(model, [], needs_fine_tuning=False)
    except CompressionError as error:
        raise error.at_position(step.position) from None


def finalize_step(step: Step | Mapping, model: keras.Model) -> keras.Model:
    """The plain model after fine-tuning: wrappers stripped, the student taken out of a Distiller."""
    step = _as_step(step)
    if step.technique == "distill":
        return model.student
    if step.technique == "prune":
        return pruning.strip(model)
    if step.technique == "cluster":
        return clustering.strip(model)
    return model


def convert(pipeline: Pipeline | Sequence[Any], model: keras.Model,
            representative_data: quantization.RepresentativeData | None = None) -> bytes:
    """TFLite bytes for the finalized model, quantized as the pipeline says (float if it doesn't)."""
    pipeline = _as_pipeline(pipeline)
    mode = pipeline.conversion
    if mode == "float":
        return quantization.convert_float(model)
    quantizing = next(s for s in pipeline.steps if s.technique in ("qat", "quantize"))
    if mode == "qat":
        return quantization.convert_qat(model, quantizing.config.input_type, quantizing.config.output_type)
    return quantization.convert_post_training(model, quantizing.config, representative_data)


FineTune = Callable[[Step, Prepared], None]


def run_pipeline(pipeline: Pipeline | Sequence[Any], model: keras.Model, fine_tune: FineTune,
                 representative_data: quantization.RepresentativeData | None = None,
                 student: keras.Model | None = None, strategy=None) -> tuple[keras.Model, bytes]:
    """Check, then prepare -> fine_tune(step, prepared) -> finalize each step, then convert.

    `fine_tune` compiles and fits `prepared.model` with `prepared.callbacks`;
    it is skipped for steps that need none. Preparation runs in
    `strategy.scope()` when a strategy is given.
    """
    pipeline = _as_pipeline(pipeline)
    check_model(pipeline, model, student)
    if pipeline.conversion == "int8" and representative_data is None:
        raise CompressionError("int8 conversion needs representative_data",
                               step="quantize", field="representative_data")
    for step in pipeline.steps:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            prepared = prepare_step(step, model, student)
        if prepared.needs_fine_tuning:
            fine_tune(step, prepared)
        model = finalize_step(step, prepared.model)
    return model, convert(pipeline, model, representative_data)

"""Compression steps as typed configs: one pydantic model per technique, keyed by `technique`.

This module never imports TensorFlow, so a spec validates in well under a
second. The YAML form `{prune: {final_sparsity: 0.8}}` and the flat form
`{technique: prune, final_sparsity: 0.8}` both validate to a `PruneStep`.

Each step builds itself on a model (`prepare`, `finalize`, `check`); those
methods import their technique's module only when called, because that
module loads TensorFlow and the model optimization toolkit.

Pipeline rules (`check_order`): "distill" only first (it replaces the model
by a fresh student); "quantize" (post-training) only last; at most one of
"qat" and "quantize". A "qat" step that does not say what to preserve
preserves what the steps before it built: sparsity after "prune", clusters
after "cluster".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter,
                      field_validator, model_validator)
from pydantic import Strict as StrictMode

from cluster.tagged import flat_form

if TYPE_CHECKING:  # only for annotations: importing them loads TensorFlow
    import tf_keras as keras

    from cluster.compression.prepared import Prepared

TECHNIQUES = ("cluster", "distill", "prune", "qat", "quantize")
# Sparsity ramps up over the first 80% of fine-tuning and holds for the rest,
# so the last epochs recover accuracy at the final sparsity (Zhu & Gupta 2017).
RAMP_FRACTION = 0.8
MASK_UPDATES = 20

IOType = Literal["int8", "uint8", "float32"]
# The model families `cluster.models` builds (kept here so specs validate without TensorFlow),
# or a user's own builder in the job's working dir as "module:function".
BUILT_IN_FAMILIES = ("bncnn", "cnn", "dscnn", "mlp")
CUSTOM_BUILDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _family(value: str) -> str:
    if value in BUILT_IN_FAMILIES or CUSTOM_BUILDER.match(value):
        return value
    raise ValueError(f"expected one of {', '.join(BUILT_IN_FAMILIES)}, or your own builder as module:function "
                     f"(a module in the job's working dir; called as function(input_shape, num_classes, width, "
                     f"depth) and returning a tf_keras model)")


Family = Annotated[str, AfterValidator(_family), Field(
    json_schema_extra={"examples": [*BUILT_IN_FAMILIES, "my_models:build"]},
    description="bncnn, cnn, dscnn, mlp, or module:function (your own builder)")]
# YAML has no tuples: lax on the container only, its items stay strict.
LayerNames = Annotated[tuple[StrictStr, ...], StrictMode(False)]


class StepBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: see cluster.spec.Strict

    technique: str
    fine_tuned: ClassVar[bool] = True

    @field_validator("exclude", mode="before", check_fields=False)
    @classmethod
    def _names_not_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("must be a list of layer names, not a string")
        return value

    def prepare(self, model: keras.Model, student: keras.Model | None = None) -> Prepared:
        """The model to fine-tune for this step and the callbacks `fit` needs (call in `strategy.scope()`)."""
        from cluster.compression.prepared import Prepared  # deferred: loads TensorFlow

        return Prepared(model, [], needs_fine_tuning=False)

    def finalize(self, model: keras.Model) -> keras.Model:
        """The plain model after fine-tuning (wrappers stripped)."""
        return model

    def check(self, model: keras.Model) -> keras.Model:
        """Raise CompressionError unless the step applies to `model`; returns the model the next step sees."""
        return model

    def scheduled(self, total_steps: int) -> StepBase:
        """This step with any schedule left open filled in from the fine-tuning length."""
        return self


class PruneStep(StepBase):
    """Magnitude pruning. "polynomial_decay" ramps `initial_sparsity` -> `final_sparsity` between
    `begin_step` and `end_step`, updating masks every `frequency` steps; "constant" holds
    `final_sparsity` from `begin_step`. `sparsity_m_by_n: [2, 4]` (2 zeros in every 4 consecutive
    input-channel weights) replaces the schedule by N:M structured sparsity."""

    technique: Literal["prune"] = "prune"
    final_sparsity: float = Field(default=0.5, ge=0.0, lt=1.0)
    schedule: Literal["polynomial_decay", "constant"] = "polynomial_decay"
    initial_sparsity: float = Field(default=0.0, ge=0.0, lt=1.0)
    begin_step: int = Field(default=0, ge=0)
    end_step: int | None = Field(
        default=None, ge=-1,
        description="Last step of the ramp (constant: -1 holds forever); default: 80 % of fine-tuning")
    frequency: int | None = Field(default=None, ge=1, description="Steps between mask updates; default: 20 updates")
    power: float = Field(default=3.0, gt=0.0)
    sparsity_m_by_n: Annotated[tuple[StrictInt, StrictInt], StrictMode(False)] | None = Field(
        default=None, description="[zeros, block], e.g. [2, 4]: N:M structured sparsity")
    exclude: LayerNames = Field(default=(), description="Layer names left dense")

    @model_validator(mode="after")
    def _consistent(self) -> PruneStep:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity ({self.initial_sparsity}) must not exceed "
                             f"final_sparsity ({self.final_sparsity})")
        if self.end_step is not None:
            never_stops = self.schedule == "constant" and self.end_step == -1
            if not never_stops and self.end_step <= self.begin_step:
                raise ValueError(f"end_step ({self.end_step}) must be greater than begin_step ({self.begin_step})"
                                 + (" (or -1 with the constant schedule)" if self.schedule == "constant" else ""))
        if self.sparsity_m_by_n is not None and not 0 < self.sparsity_m_by_n[0] < self.sparsity_m_by_n[1]:
            raise ValueError(f"sparsity_m_by_n must be [zeros, block] with 0 < zeros < block, e.g. [2, 4] "
                             f"(got {list(self.sparsity_m_by_n)})")
        return self

    def scheduled(self, total_steps: int) -> PruneStep:
        if self.end_step is not None and self.frequency is not None:
            return self
        begin = self.begin_step
        if self.schedule == "constant":
            end = -1 if self.end_step is None else self.end_step
            span = total_steps
        else:
            end = max(begin + 1, int(RAMP_FRACTION * total_steps)) if self.end_step is None else self.end_step
            span = end - begin
        frequency = self.frequency or max(1, span // MASK_UPDATES)
        return self.model_copy(update={"end_step": end, "frequency": frequency})

    def prepare(self, model, student=None):
        from cluster.compression import pruning  # deferred: loads TensorFlow

        return pruning.prepare_pruning(model, self)

    def finalize(self, model):
        from cluster.compression import pruning  # deferred: loads TensorFlow

        return pruning.strip(model)

    def check(self, model):
        from cluster.compression import pruning  # deferred: loads TensorFlow

        pruning.prunable_layer_names(model, self.exclude)
        return model


class ClusterStep(StepBase):
    """Weight sharing: each clustered kernel keeps at most `number_of_clusters` distinct values."""

    technique: Literal["cluster"] = "cluster"
    number_of_clusters: int = Field(default=16, ge=2)
    centroid_init: Literal["linear", "kmeans_plus_plus", "density_based", "random"] = "kmeans_plus_plus"
    preserve_sparsity: bool = Field(default=False, description="Keep an earlier prune step's zeros at zero")
    exclude: LayerNames = Field(default=(), description="Layer names left unclustered")

    def prepare(self, model, student=None):
        from cluster.compression import clustering  # deferred: loads TensorFlow

        return clustering.prepare_clustering(model, self)

    def finalize(self, model):
        from cluster.compression import clustering  # deferred: loads TensorFlow

        return clustering.strip(model)

    def check(self, model):
        from cluster.compression import clustering  # deferred: loads TensorFlow

        clustering.clusterable_layer_names(model, self)
        return model


class QATStep(StepBase):
    """Quantization-aware training, then int8 conversion with the learned ranges.

    `preserve` keeps an earlier step's structure: "sparsity" (pruned zeros stay zero),
    "clusters" (weights keep their cluster count), "sparsity_and_clusters" (both);
    left out, it preserves what the steps before it built."""

    technique: Literal["qat"] = "qat"
    preserve: Literal["sparsity", "clusters", "sparsity_and_clusters"] | None = None
    exclude: LayerNames = Field(default=(), description="Layer names left in float")
    input_type: IOType = "int8"
    output_type: IOType = "int8"

    def prepare(self, model, student=None):
        from cluster.compression import quantization  # deferred: loads TensorFlow

        return quantization.prepare_qat(model, self)

    def check(self, model):
        from cluster.compression import quantization  # deferred: loads TensorFlow

        quantization.quantizable_layer_names(model, self.exclude)
        return model


class QuantizeStep(StepBase):
    """Post-training quantization at conversion: full-integer "int8" (calibrated on train rows),
    "dynamic_range" (int8 weights, float activations) or "float16" weights. I/O types apply to int8."""

    technique: Literal["quantize"] = "quantize"
    fine_tuned: ClassVar[bool] = False
    mode: Literal["int8", "dynamic_range", "float16"] = "int8"
    input_type: IOType = "int8"
    output_type: IOType = "int8"


class StudentSpec(BaseModel):
    """The student's architecture: a model family and its scale."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    family: Family = "cnn"
    width: float = Field(default=1.0, gt=0.0, le=16.0)
    depth: int = Field(default=2, ge=1, le=16)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)


class DistillStep(StepBase):
    """Knowledge distillation into a fresh student, the step's input model as the frozen teacher."""

    technique: Literal["distill"] = "distill"
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.9, ge=0.0, le=1.0, description="Weight of the soft (teacher) loss")
    student: StudentSpec | None = Field(default=None, description="Required unless a student model is passed in")

    def build_student(self, teacher: keras.Model) -> keras.Model:
        from cluster import models  # deferred: loads TensorFlow
        from cluster.compression.errors import CompressionError

        if self.student is None:
            raise CompressionError("give student settings (family, width, depth) or pass a student model",
                                   step="distill", field="student")
        shape = models.ModelShape(tuple(teacher.input_shape[1:]), int(teacher.output_shape[-1]))
        return models.build_model(self.student.family, shape, self.student.width, self.student.depth,
                                  self.student.dropout)

    def prepare(self, model, student=None):
        from cluster.compression.distillation import Distiller  # deferred: loads TensorFlow
        from cluster.compression.prepared import Prepared

        student = student if student is not None else self.build_student(model)
        return Prepared(Distiller(model, student, temperature=self.temperature, alpha=self.alpha), [])

    def finalize(self, model):
        return model.student

    def check(self, model, student=None):
        from cluster.compression.distillation import check_compatible  # deferred: loads TensorFlow

        student = student if student is not None else self.build_student(model)
        check_compatible(model, student)
        return student


def _flat_form(entry: Any) -> Any:
    return flat_form(entry, "technique", TECHNIQUES, "{prune: {final_sparsity: 0.8}}")


CompressionStep = Annotated[
    Union[PruneStep, ClusterStep, QATStep, QuantizeStep, DistillStep],
    Field(discriminator="technique"), BeforeValidator(_flat_form),
]


def _preserve_after(earlier: list[str]) -> str | None:
    pruned, clustered = "prune" in earlier, "cluster" in earlier
    if pruned and clustered:
        return "sparsity_and_clusters"
    return "sparsity" if pruned else "clusters" if clustered else None


def check_order(steps: list[StepBase]) -> list[StepBase]:
    """Enforce the pipeline rules; fill in each QAT step's default preservation."""
    checked: list[StepBase] = []
    for position, step in enumerate(steps, start=1):
        earlier = [s.technique for s in checked]
        where = f"step {position} ({step.technique})"
        if step.technique == "distill" and checked:
            raise ValueError(f"{where}: distill must be the first step: it replaces the model by a fresh student")
        if "quantize" in earlier:
            raise ValueError(f"{where}: quantize (post-training) must be the last step")
        if step.technique in ("qat", "quantize") and ({"qat", "quantize"} & set(earlier)):
            raise ValueError(f"{where}: only one of qat and quantize per pipeline")
        if isinstance(step, QATStep) and step.preserve is None and "preserve" not in step.model_fields_set:
            step = step.model_copy(update={"preserve": _preserve_after(earlier)})
        checked.append(step)
    return checked


# An ordered list of steps, as a spec holds it: validated, ordered, QAT preservation filled in.
Pipeline = Annotated[list[CompressionStep], AfterValidator(check_order)]
PIPELINE = TypeAdapter(Pipeline)
STEP = TypeAdapter(CompressionStep)


def parse_steps(raw: Any) -> list[StepBase]:
    """Validate raw steps (either form) and their order; raises pydantic's ValidationError."""
    return PIPELINE.validate_python(raw)


def conversion(steps: list[StepBase]) -> str:
    """How the final model becomes TFLite: "float", a post-training mode, or "qat"."""
    for step in steps:
        if isinstance(step, QATStep):
            return "qat"
        if isinstance(step, QuantizeStep):
            return step.mode
    return "float"


def techniques(steps: list[StepBase]) -> str:
    """"prune+quantize", or "float" for no steps: the label reports use."""
    return "+".join(step.technique for step in steps) or "float"


def has_qat(steps: list[StepBase]) -> bool:
    """A QAT model holds fake-quant wrappers and cannot be saved as a plain Keras model."""
    return any(isinstance(step, QATStep) for step in steps)

"""The job spec: one versioned YAML document, validated by pydantic.

`load_spec` reads a file (safe YAML only), applies `--set dotted.key=value`
overrides and `--output DIR`, and validates. Every error names the field path
and what was expected, so a user can fix the file without reading our code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictInt, Tag, TypeAdapter,
                      ValidationError, field_validator, model_validator)
from pydantic import Strict as StrictMode

from cluster.compression.steps import Family, Pipeline
from cluster.tagged import flat_form

SPEC_VERSION = 1
DEFAULT_STORAGE = "~/sweetspot_results"
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hf://")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SpecError(ValueError):
    """A spec that does not validate; the message lists every offending field."""


def require_distinct(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} need distinct names; repeated: {repeated}")


def _folder_name(value: Any) -> Any:
    """Say why a name is refused: the bare pattern error does not tell a user what is wrong."""
    if isinstance(value, str) and not re.fullmatch(NAME_PATTERN, value):
        raise ValueError("must be a plain folder name (letters, digits, '.', '_', '-'; starting with a letter or "
                         "digit; at most 128 characters): a '/', '..', absolute or empty name would put results "
                         "outside the storage root")
    return value


# A name that becomes one folder of a results path; the pattern stays in the JSON Schema.
FolderName = Annotated[str, Field(pattern=NAME_PATTERN), BeforeValidator(_folder_name)]


def ordered(low: str, high: str):
    """A model validator: field `low` must not exceed field `high`."""
    def check(self):
        if getattr(self, low) > getattr(self, high):
            raise ValueError(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")
        return self
    return model_validator(mode="after")(check)


# YAML has no tuples: a shape arrives as a list. Lax on the container only; its items stay strict.
ImageShape = Annotated[tuple[StrictInt, StrictInt, StrictInt], StrictMode(False)]


class Strict(BaseModel):
    """Base for every section: unknown keys are mistakes, not silently ignored; `epochs: true` or
    `epochs: "3"` is refused, not read as 1 or 3 (strict types; an int is still a valid float)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ---------------------------------------------------------------- data


class DataSpec(Strict):
    train: str = Field(description="Parquet file, folder or glob of the train split: local, s3://, gs:// or hf://")
    test: str = Field(description="Parquet file, folder or glob of the test split")
    image_column: str = "image"
    label_column: str = "label"
    num_classes: int = Field(ge=2, le=100_000)
    image_shape: ImageShape = Field(
        default=(28, 28, 1), description="Height, width, channels every decoded image must have")
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    train_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="Use this class-balanced fraction of the train split (learning curves, quick runs)")
    cache: bool = Field(
        default=True,
        description="Decode once and keep the split pixels in Ray's object store; only augmentation streams "
                    "each epoch. Turn off for data larger than the object store (then every epoch decodes).")

    @field_validator("image_shape")
    @classmethod
    def _positive_shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(shape) < 1 or shape[2] not in (1, 3, 4):
            raise ValueError("expected [height >= 1, width >= 1, channels in 1, 3, 4]")
        return shape


# ---------------------------------------------------------------- augment


class Augmentation(Strict):
    p: float = Field(default=0.5, ge=0.0, le=1.0, description="Probability of applying it to an image")


class FlipLeftRight(Augmentation):
    op: Literal["flip_left_right"] = "flip_left_right"


class FlipUpDown(Augmentation):
    op: Literal["flip_up_down"] = "flip_up_down"


class RandomTranslate(Augmentation):
    op: Literal["random_translate"] = "random_translate"
    max_pixels: int = Field(default=2, ge=1, le=64)


class RandomCrop(Augmentation):
    op: Literal["random_crop"] = "random_crop"
    padding: int = Field(default=2, ge=1, le=64, description="Zero padding added before cropping back to size")


class Brightness(Augmentation):
    op: Literal["brightness"] = "brightness"
    max_delta: float = Field(default=25.0, gt=0.0, le=255.0, description="Largest shift, in pixel units (0-255)")


class Contrast(Augmentation):
    op: Literal["contrast"] = "contrast"
    lower: float = Field(default=0.8, gt=0.0)
    upper: float = Field(default=1.2, gt=0.0)

    _ordered = ordered("lower", "upper")


AUGMENT_OPS = ("flip_left_right", "flip_up_down", "random_translate", "random_crop", "brightness", "contrast")


def _augment_entry(entry: Any) -> Any:
    """`{flip_left_right: {p: 0.5}}` (the YAML form) -> `{op: flip_left_right, p: 0.5}`."""
    return flat_form(entry, "op", AUGMENT_OPS, "{flip_left_right: {p: 0.5}}")


AugmentOp = Annotated[
    Union[FlipLeftRight, FlipUpDown, RandomTranslate, RandomCrop, Brightness, Contrast],
    Field(discriminator="op"), BeforeValidator(_augment_entry),
]


# ---------------------------------------------------------------- model and training


class ModelSpec(Strict):
    family: Family = "cnn"
    width: float = Field(default=1.0, gt=0.0, le=16.0, description="Multiplier on every layer's size")
    depth: int = Field(default=2, ge=1, le=16, description="Conv blocks (cnn) or hidden layers (mlp)")
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    head_units: int | None = Field(
        default=None, ge=1, le=100_000,
        description="Hidden dense units before the logits (cnn, bncnn); default: the family's (cnn 128 x width, "
                    "bncnn none)")

    @model_validator(mode="after")
    def _head_sized_only_where_it_exists(self) -> "ModelSpec":
        if self.head_units is not None and self.family not in ("cnn", "bncnn"):
            raise ValueError(f"head_units applies to the cnn and bncnn families, not {self.family!r}")
        return self


class OptimizerSpec(Strict):
    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="Decoupled weight decay (adamw, sgd)")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")


class TrainSpec(Strict):
    epochs: int = Field(default=10, ge=1, le=10_000)
    global_batch_size: int = Field(default=256, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0, lt=2**31)
    init_from: str | None = Field(
        default=None, description="A checkpoint folder or saved Keras model to fine-tune from")
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    steps_per_execution: int = Field(
        default=8, ge=1, le=10_000,
        description="Training steps per call into TensorFlow: fewer Python round trips per step, the same "
                    "updates. A fine-tuning step whose callbacks count steps (pruning) runs one step per call.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainSpec":
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self


class ScalingSpec(Strict):
    num_workers: int = Field(default=2, ge=1, le=4096)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0.0, le=1024)
    gpus_per_worker: float = Field(default=0.0, ge=0.0, le=64)
    max_failures: int = Field(default=2, ge=-1, description="Worker failures to recover from (-1: unlimited)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    data_cpus: float = Field(
        default=1.0, gt=0.0, le=1024,
        description="CPUs left free for the Ray Data decode/augment stage (it hangs with none)")

    @model_validator(mode="after")
    def _gpus_consistent(self) -> "ScalingSpec":
        if self.use_gpu and self.gpus_per_worker == 0:
            raise ValueError("use_gpu is true but gpus_per_worker is 0; set gpus_per_worker >= 1")
        if not self.use_gpu and self.gpus_per_worker > 0:
            raise ValueError(f"gpus_per_worker is {self.gpus_per_worker} but use_gpu is false")
        return self


class OutputSpec(Strict):
    storage: str = Field(default=DEFAULT_STORAGE, validate_default=True,
                         description="Absolute path, ~/path, s3:// or gs:// root")
    overwrite: bool = Field(default=False, description="Replace results of a different spec with the same name")

    @field_validator("storage")
    @classmethod
    def _absolute_or_remote(cls, storage: str) -> str:
        if "\x00" in storage:
            raise ValueError("must not contain a NUL character")
        if storage.startswith(REMOTE_SCHEMES):
            return storage
        expanded = os.path.expanduser(storage)
        if not os.path.isabs(expanded):
            raise ValueError(
                "must be absolute (or ~/..., s3://, gs://): a submitted job runs in a temporary copy of the "
                "working dir, so a relative folder would vanish with it; use --output DIR to pass one from "
                "your current directory")
        return expanded


# ---------------------------------------------------------------- measuring


class EvaluationSpec(Strict):
    """How artifacts are measured; every variant of a job is measured the same way, on one node."""

    num_threads: int = Field(default=1, ge=1, le=256, description="Interpreter threads, recorded with the figures")
    repetitions: int = Field(default=300, ge=10, le=100_000, description="Timed batch-1 calls per artifact")
    min_seconds: float = Field(default=1.0, ge=0.0, le=600.0,
                               description="Each latency and throughput timing runs at least this long "
                                           "(more calls, steadier percentiles)")
    batch_sizes: list[int] = Field(default_factory=lambda: [32, 256], min_length=1)
    memory: bool = Field(default=True, description="Measure peak RSS of an inference process")
    price_per_cpu_hour: float | None = Field(default=None, ge=0.0)
    price_per_gpu_hour: float | None = Field(default=None, ge=0.0)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if min(sizes) < 1:
            raise ValueError("batch sizes must be >= 1")
        return sizes


# ---------------------------------------------------------------- job kinds


class JobBase(Strict):
    version: Literal[1] = SPEC_VERSION
    name: FolderName = Field(description="Results go to <output.storage>/<name>/")
    output: OutputSpec = OutputSpec()


class DataJob(JobBase):
    """A job that streams the data through Ray Data into Ray Train workers."""

    data: DataSpec
    augment: list[AugmentOp] = Field(default_factory=list)
    scaling: ScalingSpec = ScalingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()

    def _check_batch(self, train: TrainSpec, where: str) -> None:
        if train.global_batch_size < self.scaling.num_workers:
            raise ValueError(f"{where}.global_batch_size ({train.global_batch_size}) must be at least "
                             f"scaling.num_workers ({self.scaling.num_workers}): each worker needs a sample")


class LoadsUserModels(Strict):
    """A job that loads a model file the user gives (init_from, a baseline, an artifact)."""

    trust_model_code: bool = Field(
        default=False, description="Also load given models that hold code: Lambda layers, custom objects, "
                                   "HDF5 and SavedModel files. Their code runs on the cluster: only for files "
                                   "whose author you trust")


class TrainJob(DataJob, LoadsUserModels):
    kind: Literal["train"]
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    learning_curve: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default_factory=list,
        description="Also train on these class-balanced fractions of the train split (data efficiency)")

    @model_validator(mode="after")
    def _batch_splits(self) -> "TrainJob":
        self._check_batch(self.train, "train")
        return self


# ---------------------------------------------------------------- compress

FINE_TUNE_DEFAULT = TrainSpec(epochs=2, optimizer=OptimizerSpec(learning_rate=2e-4), schedule="cosine")


class VariantSpec(Strict):
    name: FolderName = Field(description="Results go to <run>/variants/<name>/")
    pipeline: Pipeline = Field(
        min_length=1, description="Ordered steps, e.g. [{prune: {final_sparsity: 0.8}}, {quantize: {mode: int8}}]")
    fine_tune: TrainSpec | None = Field(default=None, description="Overrides the job's fine_tune for this variant")

    @field_validator("fine_tune")
    @classmethod
    def _no_init_from(cls, fine_tune: TrainSpec | None) -> TrainSpec | None:
        if fine_tune is not None and fine_tune.init_from:
            raise ValueError("init_from has no meaning here: fine-tuning starts from the previous step")
        return fine_tune


class CompressJob(DataJob, LoadsUserModels):
    kind: Literal["compress"]
    baseline: str = Field(description="A train or sweep job's result folder, or a saved Keras model (.keras; "
                                      "others with trust_model_code)")
    fine_tune: TrainSpec = FINE_TUNE_DEFAULT
    variants: list[VariantSpec] = Field(min_length=1)
    representative_samples: int = Field(
        default=256, ge=8, le=100_000, description="Train rows that calibrate post-training int8 quantization")

    @model_validator(mode="after")
    def _unique_names(self) -> "CompressJob":
        names = [v.name for v in self.variants]
        require_distinct(names, "variants")
        if "baseline" in names:
            raise ValueError("'baseline' is the float baseline's name; call the variant something else")
        for variant in self.variants:
            self._check_batch(self.fine_tune_of(variant), f"variants.{variant.name}.fine_tune")
        return self

    def fine_tune_of(self, variant: VariantSpec) -> TrainSpec:
        return variant.fine_tune or self.fine_tune


# ---------------------------------------------------------------- sweep


class PipelineChoice(Strict):
    """A named compression pipeline of the search space; `[]` is the float model itself."""

    name: FolderName
    pipeline: Pipeline = Field(default_factory=list)


class FloatRange(Strict):
    """A continuous range; `step` makes it a grid of values (so scales repeat and are trained once)."""

    min: float = Field(gt=0.0, le=16.0)
    max: float = Field(gt=0.0, le=16.0)
    step: float | None = Field(default=None, gt=0.0)

    _ordered = ordered("min", "max")


class IntRange(Strict):
    min: int = Field(ge=1, le=16)
    max: int = Field(ge=1, le=16)

    _ordered = ordered("min", "max")


UNION_TAGS = ("list", "range")


def _list_or_range(value: Any) -> str:
    return "list" if isinstance(value, (list, tuple)) else "range"


class ListOrRange:
    """`ListOrRange[item, RangeModel]`: a list of values or a range, told apart by shape (errors name one)."""

    def __class_getitem__(cls, params):
        item, range_model = params
        listed, ranged = UNION_TAGS
        return Annotated[Union[Annotated[list[item], Tag(listed)], Annotated[range_model, Tag(ranged)]],
                         Discriminator(_list_or_range)]


class SparsityRange(Strict):
    min: float = Field(default=0.5, ge=0.0, lt=1.0)
    max: float = Field(default=0.95, ge=0.0, lt=1.0)

    _ordered = ordered("min", "max")


class CompressionSpace(Strict):
    """The compression dimensions a searched candidate is built from, in this order:
    prune (a sparsity in `sparsity`, or none) -> cluster (one of `clusters`; 0 = none) -> quantize
    (one of `quantize`; "none" keeps float32). Each dimension left empty is never tried."""

    sparsity: SparsityRange | None = Field(default_factory=SparsityRange,
                                           description="Final sparsity range; null: never prune")
    structured: bool = Field(default=False, description="Also try 2:4 structured sparsity instead of a ratio")
    clusters: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], description="Weight clusters per kernel to try; 0 = no clustering")
    quantize: list[Literal["none", "int8", "dynamic_range", "float16"]] = Field(
        default_factory=lambda: ["int8", "dynamic_range"], min_length=1)
    fine_tune_epochs: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [2], min_length=1, description="Fine-tuning epochs per fine-tuned step")
    exclude: list[str] = Field(default_factory=lambda: ["logits"],
                               description="Layers never pruned or clustered (the small, sensitive ones)")
    distill: bool = Field(
        default=False, description="Also try each candidate scale as a student distilled from the space's "
                                   "largest scale of its family (the teacher, trained once; under max_size_kb it "
                                   "need not fit), trained for train.epochs with the train recipe")

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, clusters: list[int]) -> list[int]:
        if any(0 < k < 2 for k in clusters):
            raise ValueError("clusters are 0 (none) or >= 2")
        return clusters


class SearchSpace(Strict):
    algorithm: Literal["grid", "optuna"] = Field(
        default="grid", description="grid: every scale x every pipeline; optuna: multi-objective search "
                                    "(accuracy up, gzip size down) over families, scales and `compression`")
    family: Family = "cnn"
    families: list[Family] = Field(default_factory=list, description="optuna: the families to choose among "
                                                                     "(default: [family])")
    widths: ListOrRange[Annotated[float, Field(gt=0.0, le=16.0)], FloatRange] = Field(
        default_factory=lambda: [1.0], description="A list (grid), or with optuna a range {min, max, step}")
    depths: ListOrRange[Annotated[int, Field(ge=1, le=16)], IntRange] = Field(
        default_factory=lambda: [2], description="A list (grid), or with optuna a range {min, max}")
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    pipelines: list[PipelineChoice] = Field(
        default_factory=lambda: [PipelineChoice(name="float")], min_length=1,
        description="grid: compression pipelines tried on every scale; include one with no steps for the "
                    "float model")
    sample: int | None = Field(
        default=None, ge=1, description="grid: try this many (scale, pipeline) pairs drawn at random")
    compression: CompressionSpace = Field(default_factory=CompressionSpace,
                                          description="optuna: the compression dimensions")
    num_samples: int = Field(default=16, ge=1, le=10_000, description="optuna: candidates to try")
    time_budget_s: float | None = Field(default=None, gt=0.0,
                                        description="optuna: start no candidate after this many seconds")
    train_too_large: bool = Field(
        default=False, description="grid: also train scales none of whose variants can fit "
                                   "constraints.max_size_kb (judged before training from each variant's "
                                   "untrained file); they then draw the frontier above the constraint")
    seed_candidates: bool = Field(
        default=True, description="optuna: try the smallest scale pruned and quantized first, so a small "
                                  "point exists early")

    @field_validator("widths", "depths")
    @classmethod
    def _values(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one value")
            if len(set(value)) != len(value):
                raise ValueError("values must not repeat")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> "SearchSpace":
        require_distinct([p.name for p in self.pipelines], "pipelines")
        for name in ("widths", "depths"):
            if self.algorithm == "grid" and not isinstance(getattr(self, name), list):
                raise ValueError(f"{name}: a range needs algorithm: optuna (the grid takes a list)")
        return self

    @property
    def family_choices(self) -> list[str]:
        return list(self.families) or [self.family]


class Reference(Strict):
    """A point drawn beside the frontier in the report: a recipe followed by hand, a published model."""

    name: str = Field(min_length=1)
    accuracy: float = Field(ge=0.0, le=1.0, description="test accuracy")
    size_kb: float | None = Field(default=None, gt=0.0, description="gzip size of its file, KB (1000 B)")
    params: int | None = Field(default=None, ge=1, description="its parameter count")
    latency_ms_p95: float | None = Field(default=None, gt=0.0)
    source: str = Field(default="", description="where the figure comes from")

    @model_validator(mode="after")
    def _placed(self) -> "Reference":
        if self.size_kb is None and self.params is None and self.latency_ms_p95 is None:
            raise ValueError(f"reference {self.name!r}: give size_kb, params or latency_ms_p95 (where to draw it)")
        return self


class Constraints(Strict):
    max_size_kb: float | None = Field(default=None, gt=0.0, description="gzip size of the TFLite file, KB (1000 B)")
    max_latency_ms_p95: float | None = Field(default=None, gt=0.0, description="batch-1 p95 in the interpreter")
    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0, description="TFLite accuracy on the test split")
    max_params: int | None = Field(default=None, ge=1)
    max_flops: int | None = Field(default=None, ge=1, description="multiply-adds per sample")


class Objective(Strict):
    metric: Literal["accuracy", "size_bytes_gzip", "latency_ms_p95"] = "accuracy"


class TuneSpec(Strict):
    max_concurrent_trials: int = Field(default=1, ge=1, le=1024)
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_epochs: int = Field(default=1, ge=1, description="ASHA: epochs every scale trial gets before a cut")
    reduction_factor: int = Field(default=2, ge=2, le=16)
    trial_driver_cpus: float = Field(
        default=0.1, gt=0.0, le=4.0,
        description="CPU of each trial's driver (it only waits on Ray Train); 0 is refused by Tune")


class SweepJob(DataJob):
    kind: Literal["sweep"]
    search: SearchSpace = SearchSpace()
    train: TrainSpec = TrainSpec()
    fine_tune: TrainSpec = FINE_TUNE_DEFAULT
    objective: Objective = Objective()
    constraints: Constraints = Constraints()
    tune: TuneSpec = TuneSpec()
    representative_samples: int = Field(default=256, ge=8, le=100_000)
    references: list[Reference] = Field(
        default_factory=list, description="Points the report draws beside the frontier (not measured by the job)")

    @model_validator(mode="after")
    def _checks(self) -> "SweepJob":
        self._check_batch(self.train, "train")
        self._check_batch(self.fine_tune, "fine_tune")
        if self.train.init_from or self.fine_tune.init_from:
            raise ValueError("init_from: a sweep trains its own baselines; use a compress job to start from one")
        if self.tune.scheduler == "asha" and self.tune.grace_epochs > self.train.epochs:
            # Ray's ASHA asserts this only once the sweep has started on the cluster.
            raise ValueError(f"tune.grace_epochs ({self.tune.grace_epochs}) must not exceed train.epochs "
                             f"({self.train.epochs}) with the asha scheduler")
        return self


# ---------------------------------------------------------------- evaluate


class TestDataSpec(Strict):
    test: str = Field(description="Parquet file, folder or glob of the test split")
    image_column: str = "image"
    label_column: str = "label"
    num_classes: int = Field(ge=2, le=100_000)
    image_shape: ImageShape = (28, 28, 1)

    _positive_shape = field_validator("image_shape")(DataSpec._positive_shape.__func__)


class ArtifactSpec(Strict):
    name: FolderName
    path: str = Field(description="A .tflite file or a saved Keras model (.keras; HDF5 or a SavedModel folder "
                                  "with trust_model_code)")


class EvaluateJob(JobBase, LoadsUserModels):
    kind: Literal["evaluate"]
    data: TestDataSpec
    artifacts: list[ArtifactSpec] = Field(min_length=1)
    evaluation: EvaluationSpec = EvaluationSpec()
    cpus: float = Field(default=1.0, gt=0.0, le=1024,
                        description="CPUs of the one Ray task that measures every artifact, one after another")

    @model_validator(mode="after")
    def _unique(self) -> "EvaluateJob":
        require_distinct([a.name for a in self.artifacts], "artifacts")
        if self.cpus < self.evaluation.num_threads:
            raise ValueError(f"cpus ({self.cpus:g}) must cover evaluation.num_threads "
                             f"({self.evaluation.num_threads}), or the timings share cores")
        return self


JOB_KINDS: dict[str, type[JobBase]] = {"train": TrainJob, "compress": CompressJob, "sweep": SweepJob,
                                       "evaluate": EvaluateJob}
JobSpec = Union[TrainJob, CompressJob, SweepJob, EvaluateJob]


# ---------------------------------------------------------------- loading


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: `field.path: what was expected (got value)`."""
    lines = []
    for item in error.errors():
        # ListOrRange's union tags are not fields: "search.widths.0", not "search.widths.list.0".
        path = ".".join(str(part) for part in item["loc"] if part not in UNION_TAGS) or "<spec>"
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, (dict, list)) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  {path}: {message}{shown}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {text!r}: expected dotted.key=value")
    try:
        return key.strip().split("."), parse_yaml(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise SpecError(f"--set {text!r}: the value is not valid YAML: {error}") from None


def apply_overrides(document: dict, overrides: list[str]) -> dict:
    """Set each dotted key in a copy of the raw document; list items by index (augment.0.p=1)."""
    document = json.loads(json.dumps(document))
    for text in overrides:
        path, value = parse_override(text)
        node: Any = document
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(f"--set {text!r}: {where} is not an index of a list of {len(node)}")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise SpecError(f"--set {text!r}: {where} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise SpecError(f"--set {text!r}: {last} is not an index of a list of {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {text!r}: {'.'.join(path[:-1])} is a value, not a section")
    return document


def validate_document(document: Any, source: str = "<spec>") -> JobSpec:
    """Validate a parsed document against the model of its `kind`."""
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(document).__name__}")
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in JOB_KINDS:
        raise SpecError(f"{source}: invalid spec\n  kind: expected one of {', '.join(JOB_KINDS)} (got {kind!r})")
    try:
        return JOB_KINDS[kind].model_validate(document)
    except ValidationError as error:
        raise SpecError(f"{source}: invalid spec\n{format_validation_error(error)}") from None


MAX_SPEC_BYTES = 1_000_000


class SpecLoader(yaml.SafeLoader):
    """Safe YAML (no Python objects) that also refuses what makes a spec mean something it does not show:
    a key given twice (the last would silently win) and aliases (a few bytes can expand to gigabytes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a spec",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.2 reads `3e-4` as a number; PyYAML (YAML 1.1) reads it as the string "3e-4", which the strict
# spec would refuse. An exponent with no dot is a float here too.
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str):
    """One YAML document through SpecLoader (a SafeLoader: a spec is data, it never constructs Python objects)."""
    loader = SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_document(path: str | Path) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: a spec is at most {MAX_SPEC_BYTES:,} bytes; this file has "
                            f"{path.stat().st_size:,}")
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None, output: str | None = None) -> JobSpec:
    """Read, override and validate a spec file.

    `output` replaces `output.storage`; a relative one is resolved against the
    current directory here, on the client, before the job is submitted.
    """
    document = read_document(path)
    if isinstance(document, dict):
        document = apply_overrides(document, overrides or [])
        if output is not None:
            resolved = output if output.startswith(REMOTE_SCHEMES) else os.path.abspath(os.path.expanduser(output))
            document.setdefault("output", {})
            if not isinstance(document["output"], dict):
                raise SpecError(f"{path}: output must be a mapping")
            document["output"]["storage"] = resolved
    return validate_document(document, source=str(path))


def spec_to_yaml(spec: BaseModel) -> str:
    """The validated spec with every default filled in, as written next to the results."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict:
    """The JSON Schema of every job kind (a `oneOf` keyed by `kind`)."""
    return TypeAdapter(Annotated[JobSpec, Field(discriminator="kind")]).json_schema()


def run_dir(spec: JobBase) -> str:
    """Where a job's results go: `<storage>/<name>` (a local path or a URI)."""
    return f"{spec.output.storage.rstrip('/')}/{spec.name}"

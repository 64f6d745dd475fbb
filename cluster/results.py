"""What the jobs write and everything else reads: one typed record per measured artifact, one summary per job kind.

Jobs build these models and write them as JSON (`summary.json`, the per-variant
records); the CLI, the reports, the bench and the tests read them back with
`read_summary`, so a misspelt or missing field fails where it is made, not
where it is shown. No TensorFlow here: `sweetspot results` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1
SCALE_MODEL = "scales/{scale}/model.keras"  # where a sweep keeps each trained scale's Keras model


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileFigures(Record):
    """The cost figures of one deployable file: its model's size and compute, and its speed and memory."""

    params: int | None = None
    params_nonzero: int | None = None
    flops: int | None = None  # MACs per sample
    flops_sparse: int | None = None
    size_bytes: int | None = None
    size_bytes_gzip: int | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    throughput_sps: dict[str, float] = Field(default_factory=dict)  # samples/s by batch size
    num_threads: int | None = None
    peak_rss_bytes: int | None = None  # a fresh process holding the runtime and the model


class EvaluationRecord(FileFigures):
    """Everything measured about one artifact: the .tflite file a user would deploy."""

    name: str
    artifact: str | None = None
    peak_rss_baseline_bytes: int | None = None  # the same process before the model loaded
    accuracy: float | None = None
    num_test_samples: int | None = None
    batch_sizes: list[int] = Field(default_factory=list)
    repetitions: int | None = None
    weight_dtypes: dict[str, int] = Field(default_factory=dict)
    # Whatever the producing job wants to keep with it (scale, pipeline, ...).
    extra: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def max_batch_throughput(self) -> tuple[int, float] | None:
        """(batch size, samples/s) at the largest measured batch size."""
        if not self.throughput_sps:
            return None
        batch = max(self.throughput_sps, key=int)
        return int(batch), self.throughput_sps[batch]


class VariantResult(EvaluationRecord):
    """One variant of a sweep or compress job: its measured file, how it was made, and how it compares."""

    technique: str = "float"  # the pipeline's techniques joined by '+', or 'float'
    sparsity: float | None = None  # zero weights / all weights of the Keras model it was exported from
    sparsity_per_layer: dict[str, float] = Field(default_factory=dict)
    unique_values_per_layer: dict[str, int] = Field(default_factory=dict)
    size_ratio: float | None = None  # the baseline's gzip size / this one's
    accuracy_drop_pt: float | None = None  # the baseline's accuracy - this one's, in points
    keras_model: str | None = None  # where the job kept the Keras model, if it did
    node: str | None = None  # the Ray node an evaluate job measured it on

    def compared_with(self, base: "VariantResult | None") -> "VariantResult":
        """This result with its size ratio and accuracy drop against `base` (None: unknown)."""
        if base is None:
            return self.model_copy(update={"size_ratio": None, "accuracy_drop_pt": None})
        return self.model_copy(update={"size_ratio": base.size_bytes_gzip / self.size_bytes_gzip,
                                       "accuracy_drop_pt": 100.0 * (base.accuracy - self.accuracy)})


class ReferencePoint(Record):
    """A point drawn beside the frontier, given by the spec or a benchmark, never measured by the job."""

    name: str
    accuracy: float
    size_bytes_gzip: float | None = None
    params: int | None = None
    latency_ms_p95: float | None = None
    source: str = ""


class FailedTrial(Record):
    name: str
    error: str


class SweepSummary(Record):
    """summary.json of a sweep: every variant measured, the frontier, the choice under the constraints."""

    kind: Literal["sweep"] = "sweep"
    name: str
    baseline: str | None  # the most accurate float scale: what ratios and drops are taken against
    variants: list[VariantResult]
    pareto: dict[str, list[str]]  # cost ('size_bytes_gzip', 'latency_ms_p95') -> names on the front
    sweet_spot: str | None
    closest: str | None = None  # when nothing meets every constraint
    closest_violations: dict[str, float] = Field(default_factory=dict)
    feasible: list[str] = Field(default_factory=list)
    constraints: dict[str, float | None]
    objective: str = "accuracy"
    failed: list[FailedTrial] = Field(default_factory=list)
    stopped_early: list[str] = Field(default_factory=list)
    num_threads: int = 1
    learning_curves: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    # Grid search: epochs each scale trial ran, against the exhaustive grid's.
    scale_trial_epochs: dict[str, int] | None = None
    scale_trial_epochs_used: int | None = None
    scale_trial_epochs_full_grid: int | None = None
    # Grid search under max_size_kb: each variant's expected smallest file (bytes, from its untrained
    # probe) and the scales not trained because none of their variants could fit.
    size_floors: dict[str, int] = Field(default_factory=dict)
    skipped_too_large: list[str] = Field(default_factory=list)
    search: dict[str, Any] | None = None  # Optuna search: trials, scored, skipped by the size bound
    test_images_in_train: int | None = None  # test rows identical to a train row: a leak that inflates accuracy
    references: list[ReferencePoint] = Field(default_factory=list)

    def variant(self, name: str | None) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def baseline_model(self) -> str | None:
        """The baseline scale's Keras model, relative to the sweep's run folder."""
        base = self.variant(self.baseline)
        scale = base.extra.get("scale_name") if base else None
        return SCALE_MODEL.format(scale=scale) if scale else None


class CompressSummary(Record):
    """summary.json of a compress job: the baseline and each pipeline's variant, measured alike."""

    kind: Literal["compress"] = "compress"
    name: str
    baseline: str
    baseline_source: str
    variants: list[VariantResult]
    artifacts: dict[str, str] = Field(default_factory=dict)
    test_images_in_train: int | None = None  # test rows identical to a train row

    def variant(self, name: str | None) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)


class KerasFigures(Record):
    """The trained Keras model as measured beside its TFLite file (accuracy and latency in TensorFlow)."""

    name: str = "keras-float"
    artifact: str
    accuracy: float
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    throughput_sps: dict[str, float] = Field(default_factory=dict)
    num_threads: int | None = None


class TrainedModels(Record):
    tflite: EvaluationRecord
    keras: KerasFigures


class LearningCurvePoint(Record):
    fraction: float
    train_rows: int
    samples_seen: int
    test_accuracy: float


class DataEfficiency(Record):
    accuracy_vs_samples_seen: list[dict[str, float | None]]  # samples_seen, val_accuracy after each epoch
    learning_curve: list[LearningCurvePoint]


class Resources(Record):
    """What the Ray Train run reserved and used; `cost` is billed on what was reserved."""

    wall_seconds: float
    worker_cpu_seconds: float
    reserved_cpu_seconds: float
    cpu_utilisation: float
    gpu_seconds: float
    peak_rss_bytes_per_worker: dict[str, int]
    worker_processes: int
    epochs_started: list[int]  # every epoch start in order: a repeated epoch was redone after a failure
    epochs_repeated: int
    cost: float | None = None


class TrainSummary(FileFigures):
    """summary.json of a train job: one model, trained once, measured as Keras and as its float TFLite file.

    The file figures (FileFigures) are the float TFLite file's, repeated from models.tflite for a flat read.
    """

    kind: Literal["train"] = "train"
    name: str
    epochs_completed: int
    train_rows: int
    validation_rows: int
    validation_accuracy: float | None
    test_loss: float
    test_accuracy: float  # Keras, on the test split
    tflite_test_accuracy: float
    test_rows: int
    models: TrainedModels
    artifacts: dict[str, str]
    train_seconds: float
    wall_seconds: float
    samples_per_second: float
    samples_seen: int
    workers: int
    test_images_in_train: int | None = None
    data_efficiency: DataEfficiency
    resources: Resources


class EvaluateSummary(Record):
    """summary.json of an evaluate job: given artifacts, measured in one task on one node."""

    kind: Literal["evaluate"] = "evaluate"
    name: str
    variants: list[VariantResult]
    num_threads: int = 1
    artifacts: dict[str, str] = Field(default_factory=dict)

    def variant(self, name: str | None) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)


JobSummary = Annotated[Union[TrainSummary, SweepSummary, CompressSummary, EvaluateSummary],
                       Field(discriminator="kind")]
_JOB_SUMMARY = TypeAdapter(JobSummary)


def read_summary(data: dict) -> TrainSummary | SweepSummary | CompressSummary | EvaluateSummary:
    """Any job's summary.json as its model (pydantic's ValidationError names a missing or unknown field)."""
    return _JOB_SUMMARY.validate_python(data)

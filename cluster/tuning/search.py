"""The searched space (`search.algorithm: optuna`): candidates, their Optuna space, and a size bound.

A candidate is a model scale (family, width, depth) and the compression
pipeline built from the `compression` dimensions, in a fixed order: distill
(the scale as a student of the space's largest scale) -> prune (a final
sparsity, or 2:4) -> cluster -> post-training quantization. Optuna
proposes candidates through Ray Tune's `OptunaSearch` (multi-objective:
validation accuracy up, gzip size down); each trial trains its scale (once
per scale) and builds its pipeline on Ray Train.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from cluster.compression.steps import ClusterStep, DistillStep, PruneStep, QuantizeStep, StepBase, StudentSpec
from cluster.tuning.space import Scale, Variant

@dataclass(frozen=True)
class Candidate:
    """One point of the searched space."""

    scale: Scale
    sparsity: float  # 0: not pruned; -1: 2:4 structured
    clusters: int  # 0: not clustered
    quantize: str  # "none" keeps float32
    fine_tune_epochs: int
    exclude: tuple[str, ...] = ()
    teacher: Scale | None = None  # distilled: `scale` is the student, trained from this scale's model

    @property
    def label(self) -> str:
        """The pipeline's part of the variant name, e.g. "p0.85-c16-int8", "float" or, distilled from a
        teacher, "kd-bncnn-w0.25-d3-int8" (the variant is named after the teacher it starts from)."""
        parts = [f"kd-{self.scale.name}"] if self.teacher else []
        if self.sparsity == -1:
            parts.append("2of4")
        elif self.sparsity > 0:
            parts.append(f"p{self.sparsity:g}")
        if self.clusters:
            parts.append(f"c{self.clusters}")
        if self.quantize != "none":
            parts.append({"dynamic_range": "dr"}.get(self.quantize, self.quantize))
        if self.sparsity != 0 or self.clusters > 0:
            parts.append(f"e{self.fine_tune_epochs}")
        return "-".join(parts) or "float"

    @property
    def fine_tuned(self) -> bool:
        return self.sparsity != 0 or self.clusters > 0 or self.teacher is not None

    @property
    def steps(self) -> tuple[StepBase, ...]:
        steps: list[StepBase] = []
        if self.teacher is not None:
            steps.append(DistillStep(student=StudentSpec(family=self.scale.family, width=self.scale.width,
                                                         depth=self.scale.depth)))
        if self.sparsity == -1:
            steps.append(PruneStep(sparsity_m_by_n=(2, 4), exclude=self.exclude))
        elif self.sparsity > 0:
            steps.append(PruneStep(final_sparsity=self.sparsity, exclude=self.exclude))
        if self.clusters:
            steps.append(ClusterStep(number_of_clusters=self.clusters, preserve_sparsity=self.sparsity != 0,
                                     exclude=self.exclude))
        if self.quantize != "none":
            steps.append(QuantizeStep(mode=self.quantize))
        return tuple(steps)

    @property
    def variant(self) -> Variant:
        return Variant(self.teacher or self.scale, self.label, self.steps)


def _values(value) -> list:
    return list(value) if isinstance(value, list) else None


@dataclass(frozen=True)
class DefineSpace:
    """Optuna's define-by-run space for a SearchSpace: only the dimensions it opens.

    A class, not a closure: Tune pickles the searcher (with this) into the run's state.
    """

    search: object

    def __call__(self, trial: optuna.Trial) -> None:
        search, compression = self.search, self.search.compression
        trial.suggest_categorical("family", search.family_choices)
        widths = _values(search.widths)
        if widths is not None:
            trial.suggest_categorical("width", widths)
        else:
            trial.suggest_float("width", search.widths.min, search.widths.max, step=search.widths.step)
        depths = _values(search.depths)
        if depths is not None:
            trial.suggest_categorical("depth", depths)
        else:
            trial.suggest_int("depth", search.depths.min, search.depths.max)
        prune_choices = ["none"] + (["ratio"] if compression.sparsity else []) + \
            (["2:4"] if compression.structured else [])
        if trial.suggest_categorical("prune", prune_choices) == "ratio":
            trial.suggest_float("sparsity", compression.sparsity.min, compression.sparsity.max, step=0.05)
        trial.suggest_categorical("clusters", compression.clusters)
        trial.suggest_categorical("quantize", compression.quantize)
        trial.suggest_categorical("fine_tune_epochs", compression.fine_tune_epochs)
        if compression.distill:
            trial.suggest_categorical("distill", [False, True])



STUDY_NAME = "sweetspot"


class _Replay:
    """An Optuna trial stand-in that answers each suggestion with a recorded config's value and
    notes its distribution: what `create_trial` needs to add a finished candidate to a study."""

    def __init__(self, config: dict):
        self.config, self.distributions = config, {}

    def _value(self, name: str, distribution):
        self.distributions[name] = distribution
        return self.config[name]

    def suggest_categorical(self, name, choices):
        return self._value(name, optuna.distributions.CategoricalDistribution(choices))

    def suggest_float(self, name, low, high, step=None):
        return self._value(name, optuna.distributions.FloatDistribution(low, high, step=step))

    def suggest_int(self, name, low, high):
        return self._value(name, optuna.distributions.IntDistribution(low, high))


def study_storage(search, records: list[dict]) -> optuna.storages.InMemoryStorage:
    """An Optuna storage whose study holds the candidates an earlier attempt scored (accuracy, size).

    A resubmitted search continues from them, rebuilt from the sweep's own JSON
    records: Tune's saved searcher state is a pickle, never loaded.
    """
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=["maximize", "minimize"])
    space = DefineSpace(search)
    for record in records:
        replay = _Replay(record["config"])
        space(replay)
        study.add_trial(optuna.trial.create_trial(
            params={name: record["config"][name] for name in replay.distributions},
            distributions=replay.distributions, values=[record["val_accuracy"], record["size_bytes_gzip"]]))
    return storage


def candidate_of(config: dict, search) -> Candidate:
    """The candidate a trial's config (the space's values) describes."""
    prune = config.get("prune", "none")
    sparsity = {"none": 0.0, "2:4": -1.0}.get(prune, round(float(config.get("sparsity", 0.0)), 2))
    scale = Scale(config["family"], round(float(config["width"]), 4), int(config["depth"]))
    teacher = largest_scale(search, scale.family) if config.get("distill") else None
    return Candidate(scale, sparsity=sparsity, clusters=int(config.get("clusters", 0)),
                     quantize=config.get("quantize", "none"), fine_tune_epochs=int(config.get("fine_tune_epochs", 1)),
                     exclude=tuple(search.compression.exclude), teacher=teacher if teacher != scale else None)


def largest_scale(search, family: str) -> Scale:
    """The widest, deepest scale of `family` in the space: the teacher of distilled candidates."""
    widths, depths = _values(search.widths), _values(search.depths)
    return Scale(family, round(float(max(widths) if widths else search.widths.max), 4),
                 int(max(depths) if depths else search.depths.max))


def seed_points(search) -> list[dict]:
    """A first candidate with a small file: the smallest scale, pruned hard if the space prunes, quantized;
    and, when the space distills, the same student distilled from the largest scale.

    The search then starts from points near the small end of the frontier
    instead of waiting for the sampler to find them.
    """
    compression = search.compression
    widths, depths = _values(search.widths), _values(search.depths)
    point = {"family": search.family_choices[0],
             "width": min(widths) if widths else search.widths.min,
             "depth": min(depths) if depths else search.depths.min,
             "prune": "ratio" if compression.sparsity else "none",
             "clusters": compression.clusters[0],
             "quantize": next((q for q in ("int8", "dynamic_range", "float16") if q in compression.quantize),
                              compression.quantize[0]),
             "fine_tune_epochs": max(compression.fine_tune_epochs)}
    if compression.sparsity:
        point["sparsity"] = round(min(max(0.8, compression.sparsity.min), compression.sparsity.max), 2)
    if compression.distill:
        return [{**point, "distill": False}, {**point, "distill": True}]
    return [point]

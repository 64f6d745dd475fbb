"""The search space as concrete variants: model scales x compression pipelines."""

from __future__ import annotations

import random
from dataclasses import dataclass

from cluster.compression.steps import DistillStep


@dataclass(frozen=True)
class Scale:
    family: str
    width: float
    depth: int

    @property
    def name(self) -> str:
        # A user's builder "module:function" names its folders "module-function".
        return f"{self.family.replace(':', '-')}-w{self.width:g}-d{self.depth}"


@dataclass(frozen=True)
class Variant:
    scale: Scale
    pipeline_name: str
    pipeline: tuple

    @property
    def name(self) -> str:
        return f"{self.scale.name}-{self.pipeline_name}"

    @property
    def is_float(self) -> bool:
        return not self.pipeline


def expand(search, seed: int) -> tuple[list[Scale], list[Variant]]:
    """Every scale's float model is a variant (it is trained anyway); compressed variants per the grid or a sample."""
    scales = [Scale(search.family, w, d) for w in search.widths for d in search.depths]
    compressed = [Variant(s, p.name, tuple(p.pipeline)) for s in scales for p in search.pipelines if p.pipeline]
    if search.sample is not None and search.sample < len(compressed):
        compressed = sorted(random.Random(seed).sample(compressed, search.sample), key=compressed.index)
    floats = [Variant(s, "float", ()) for s in scales]
    return scales, floats + compressed


def smallest_cost(scales: list[Scale], variants: list[Variant], image_shape, num_classes: int) -> dict:
    """The fewest parameters and multiply-adds any candidate model can have (students included)."""
    from cluster.evaluation.compute import compute_profile
    from cluster.models import ModelShape, build_model

    shape = ModelShape(tuple(image_shape), num_classes)
    candidates = {(s.family, s.width, s.depth) for s in scales}
    for variant in variants:
        for step in variant.pipeline:
            if isinstance(step, DistillStep) and step.student is not None:
                candidates.add((step.student.family, step.student.width, step.student.depth))
    profiles = [compute_profile(build_model(f, shape, w, d)) for f, w, d in candidates]
    return {"params": min(p.params for p in profiles), "flops": min(p.flops for p in profiles)}


def check_reachable(constraints, scales: list[Scale], variants: list[Variant], image_shape,
                    num_classes: int) -> None:
    """Refuse, before any trial, constraints that no model of the search space can meet by construction."""
    least = smallest_cost(scales, variants, image_shape, num_classes)
    for field, figure in (("max_params", "params"), ("max_flops", "flops")):
        bound = getattr(constraints, field)
        if bound is not None and bound < least[figure]:
            raise UnreachableConstraint(
                f"constraints.{field}={bound:,} but the smallest model of the search space has "
                f"{least[figure]:,} {figure}: no variant can meet it; add smaller widths/depths")


class UnreachableConstraint(ValueError):
    """A constraint no variant of the search space can meet."""

"""Choosing among measured variants: constraints, the Pareto frontier, the sweet spot.

A variant is a dict of measured figures (`accuracy`, `size_bytes_gzip`,
`latency_ms_p95`, `params`, `flops`, ...). Accuracy is maximised, every cost
minimised.
"""

from __future__ import annotations

from dataclasses import dataclass

# constraint field -> (variant figure, bound kind, scale from the constraint's unit to the figure's)
CONSTRAINTS = {
    "max_size_kb": ("size_bytes_gzip", "max", 1000.0),
    "max_latency_ms_p95": ("latency_ms_p95", "max", 1.0),
    "min_accuracy": ("accuracy", "min", 1.0),
    "max_params": ("params", "max", 1.0),
    "max_flops": ("flops", "max", 1.0),
}


def violations(variant: dict, constraints: dict) -> dict[str, float]:
    """Each broken constraint with its relative shortfall (0.1 = 10 % past the bound)."""
    broken = {}
    for name, bound in constraints.items():
        if bound is None:
            continue
        figure, kind, scale = CONSTRAINTS[name]
        value, limit = variant.get(figure), bound * scale
        if value is None:
            broken[name] = float("inf")
        elif kind == "max" and value > limit:
            broken[name] = (value - limit) / limit
        elif kind == "min" and value < limit:
            broken[name] = (limit - value) / limit if limit else float("inf")
    return broken


def dominates(a: dict, b: dict, cost: str) -> bool:
    """a is at least as accurate and as cheap as b, and strictly better in one."""
    return (a["accuracy"] >= b["accuracy"] and a[cost] <= b[cost]
            and (a["accuracy"] > b["accuracy"] or a[cost] < b[cost]))


def pareto_front(variants: list[dict], cost: str) -> list[str]:
    """Names of the variants no other variant dominates on (accuracy, cost), cheapest first."""
    measured = [v for v in variants if v.get("accuracy") is not None and v.get(cost) is not None]
    front = [v for v in measured if not any(dominates(o, v, cost) for o in measured if o is not v)]
    return [v["name"] for v in sorted(front, key=lambda v: (v[cost], -v["accuracy"]))]


@dataclass(frozen=True)
class Choice:
    sweet_spot: str | None
    closest: str | None
    closest_violations: dict[str, float]
    feasible: list[str]


def choose(variants: list[dict], constraints: dict, objective: str = "accuracy") -> Choice:
    """The best variant meeting every constraint; if none does, the one that misses them by least."""
    measured = [v for v in variants if v.get("accuracy") is not None]
    feasible = [v for v in measured if not violations(v, constraints)]
    if feasible:
        if objective == "accuracy":
            best = max(feasible, key=lambda v: (v["accuracy"], -v["size_bytes_gzip"]))
        else:
            best = min(feasible, key=lambda v: (v[objective], -v["accuracy"]))
        return Choice(best["name"], None, {}, [v["name"] for v in feasible])
    if not measured:
        return Choice(None, None, {}, [])
    closest = min(measured, key=lambda v: (sum(violations(v, constraints).values()), -v["accuracy"]))
    return Choice(None, closest["name"], violations(closest, constraints), [])

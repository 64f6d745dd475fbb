"""Sweep: parallel efficiency of an N-variant sweep, and ASHA against the full grid.

The quickstart sweep (`configs/quickstart.yaml`: 2 CNN widths x {float, int8,
pruned 75 % + int8} on the bundled sample) with fewer epochs, run twice as a
`kind: sweep` job on the local cluster:

* grid (FIFO), `tune.max_concurrent_trials = slots`: parallel efficiency =
  sum of the trials' own times / (slots x the span of the Tune experiments),
  the trials' times and the span read from Tune's `result.json` files
  (`time_total_s`, end `timestamp`); also against the whole job's wall time.
* ASHA (same spec, `tune.scheduler: asha`): the sweet spot it picks against
  the grid's, and the fraction of scale-trial epochs it trained
  (`scale_trial_epochs_used / scale_trial_epochs_full_grid` of the summary).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import common

NAME = "sweep"
# `slots` asks for that many trials at once; the sweep's CPU budget (cluster/tuning/budget.py) lowers it to
# what the cluster holds (each trial: 0.1 driver + 2 workers + 1 data CPU), and the granted number is used.
DEFAULT = {"epochs": 2, "fine_tune_epochs": 1, "slots": 2, "repetitions": 1, "grace_epochs": 1,
           "reduction_factor": 2, "pipelines": None, "widths": None}
# Quick: one scale and one post-training variant, so each of the two sweeps is a single Ray Train run.
QUICK = {**DEFAULT, "epochs": 2, "slots": 1, "pipelines": ["float", "int8"], "widths": [0.25]}
QUICKSTART = common.ROOT / "configs" / "quickstart.yaml"


def sweep_document(name: str, storage: Path, overrides: list[str], pipelines: list[str] | None = None) -> dict:
    """configs/quickstart.yaml with `--set` overrides (as `load_spec` applies them), data paths made absolute.

    `pipelines` keeps only the quickstart's pipelines of those names.
    """
    from cluster.spec import apply_overrides, read_document

    document = apply_overrides(read_document(QUICKSTART), overrides)
    if pipelines:
        document["search"]["pipelines"] = [p for p in document["search"]["pipelines"] if p["name"] in pipelines]
    document["name"] = name
    document["data"].update(train=str(common.SAMPLE / "train.parquet"), test=str(common.SAMPLE / "test.parquet"))
    document["output"] = {"storage": str(storage), "overwrite": True}
    return document


def trial_times(run_dir: Path) -> dict:
    """Each Tune trial's own time and the span of each experiment, from Tune's result.json files."""
    trials, spans = {}, {}
    for experiment in ("scales", "variants"):
        starts, ends = [], []
        # Each attempt of the sweep is its own experiment folder: <experiment>-<attempt>.
        for result in sorted((run_dir / "tune").glob(f"{experiment}-*/*/result.json")):
            lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            if not lines:
                continue
            last = lines[-1]
            name = last.get("config", {}).get("variant", {}).get("name", result.parent.name)
            trials[f"{experiment}/{name}"] = last["time_total_s"]
            starts.append(last["timestamp"] - last["time_total_s"])
            ends.append(last["timestamp"])
        if starts:
            spans[experiment] = max(ends) - min(starts)
    return {"trial_seconds": trials, "experiment_span_seconds": spans}


def slots_granted(document: dict) -> int:
    """Trials the sweep runs at once on this cluster: `tune.max_concurrent_trials`, lowered by the CPU budget."""
    from cluster.spec import validate_document
    from cluster.training.resources import Capacity
    from cluster.tuning.budget import plan_concurrency

    common.connect()
    spec = validate_document(document)
    return plan_concurrency(spec.scaling, spec.tune, Capacity.of_cluster()).concurrency


def run_sweep_job(ctx: common.Context, name: str, overrides: list[str], pipelines: list[str] | None) -> dict:
    storage = ctx.scratch / "sweep"
    document = sweep_document(name, storage, overrides, pipelines)
    slots = slots_granted(document)
    summary, wall = common.run_job(document, ctx)
    times = trial_times(storage / name)
    return {"wall_seconds": wall, "slots": slots, **times, "sweet_spot": summary.get("sweet_spot"),
            "variants": len(summary["variants"]), "scale_trial_epochs": summary.get("scale_trial_epochs"),
            "scale_trial_epochs_used": summary.get("scale_trial_epochs_used"),
            "scale_trial_epochs_full_grid": summary.get("scale_trial_epochs_full_grid"),
            "accuracy": {v["name"]: v["accuracy"] for v in summary["variants"]}}


def efficiency(run: dict) -> dict:
    busy, slots = sum(run["trial_seconds"].values()), run["slots"]
    span = sum(run["experiment_span_seconds"].values())
    return {"trial_seconds_sum": busy, "tune_span_seconds": span,
            "parallel_efficiency_tune": busy / (slots * span) if span else None,
            "speedup_vs_serial_tune": busy / span if span else None,
            "parallel_efficiency_job": busy / (slots * run["wall_seconds"])}


def base_overrides(settings: dict) -> list[str]:
    """The `--set` overrides both runs apply to configs/quickstart.yaml."""
    base = [f"train.epochs={settings['epochs']}", f"fine_tune.epochs={settings['fine_tune_epochs']}",
            f"tune.max_concurrent_trials={settings['slots']}", "evaluation.repetitions=50",
            "evaluation.memory=false", "evaluation.batch_sizes=[256]"]
    if settings.get("widths"):
        base.append(f"search.widths={settings['widths']}")
    return base


def grid_overrides(settings: dict) -> list[str]:
    """The grid (FIFO) run's overrides; the frontier benchmark's quick case is this run."""
    return [*base_overrides(settings), "tune.scheduler=fifo"]


def run(settings: dict, ctx: common.Context) -> dict:
    base = base_overrides(settings)
    asha = ["tune.scheduler=asha", f"tune.grace_epochs={settings['grace_epochs']}",
            f"tune.reduction_factor={settings['reduction_factor']}"]
    grid_runs, asha_runs = [], []
    for rep in range(settings["repetitions"]):
        common.log(f"sweep: grid (fifo), repetition {rep + 1}")
        grid_runs.append(run_sweep_job(ctx, f"bench-sweep-grid-{rep}", grid_overrides(settings),
                                       settings.get("pipelines")))
        common.log(f"sweep: asha, repetition {rep + 1}")
        asha_runs.append(run_sweep_job(ctx, f"bench-sweep-asha-{rep}", base + asha, settings.get("pipelines")))
    grid = [efficiency(r) for r in grid_runs]
    pick = lambda runs, key: common.median(r[key] for r in runs)  # noqa: E731
    used = pick(asha_runs, "scale_trial_epochs_used")
    full = pick(asha_runs, "scale_trial_epochs_full_grid")
    return {
        "settings": settings, "overrides": base, "grid_runs": grid_runs, "asha_runs": asha_runs,
        "grid": {"variants": grid_runs[0]["variants"], "slots": grid_runs[0]["slots"],
                 "wall_seconds": pick(grid_runs, "wall_seconds"),
                 "trial_seconds_sum": pick(grid, "trial_seconds_sum"),
                 "tune_span_seconds": pick(grid, "tune_span_seconds"),
                 "parallel_efficiency_tune": pick(grid, "parallel_efficiency_tune"),
                 "speedup_vs_serial_tune": pick(grid, "speedup_vs_serial_tune"),
                 "parallel_efficiency_job": pick(grid, "parallel_efficiency_job"),
                 "sweet_spot": grid_runs[0]["sweet_spot"]},
        "asha": {"wall_seconds": pick(asha_runs, "wall_seconds"), "sweet_spot": asha_runs[0]["sweet_spot"],
                 "scale_trial_epochs_used": used, "scale_trial_epochs_full_grid": full,
                 "epoch_fraction": used / full if full else None,
                 "same_sweet_spot": all(a["sweet_spot"] == g["sweet_spot"] for a, g in zip(asha_runs, grid_runs)),
                 "wall_ratio_vs_grid": pick(asha_runs, "wall_seconds") / pick(grid_runs, "wall_seconds")},
    }

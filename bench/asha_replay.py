"""ASHA replayed on a finished grid sweep's own learning curves: which scales it stops, and its sweet spot.

Two live sweeps differ by more than their scheduler: multi-worker training is
not bit-reproducible, and on full Fashion-MNIST two candidates of
configs/sweep_full.yaml sit within a point of each other, so two grid runs can
already disagree on the sweet spot. Replaying isolates the scheduler's
decisions: each scale trial of the grid run is a scripted Tune trial that
reports that scale's recorded validation accuracy epoch by epoch, in the order
the sweep runs them (smallest first), under the real Tune and the real
scheduler. The sweet spot is then chosen, with the sweep's own `choose`, from
the grid's measured variants of the scales the scheduler let finish.

    python -m bench.asha_replay [--run ~/sweetspot_results/fashion-sweep]

Writes bench/results/asha_replay.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from bench import common

# (grace epochs, reduction factor): the sweep's own setting first, then more aggressive ones.
SETTINGS = [(2, 3), (1, 3), (1, 2), (2, 2)]


def learning_curves(run: Path) -> dict[str, list[float]]:
    """Scale name -> validation accuracy after each epoch, from the scale trials' history.json files."""
    return {folder.name: [float(epoch["val_accuracy"]) for epoch in json.loads((folder / "history.json").read_text())]
            for folder in sorted((run / "scales").iterdir()) if (folder / "history.json").exists()}


def replay(curves: dict[str, list[float]], order: list[str], scheduler, storage: Path) -> dict[str, int]:
    """Epochs each scale trains under `scheduler`, its trials run one at a time in `order`."""
    from ray import tune

    def scripted(config):
        for epoch, accuracy in enumerate(curves[config["name"]], start=1):
            tune.report({"epoch": epoch, "val_accuracy": accuracy})

    tuner = tune.Tuner(
        tune.with_resources(scripted, {"cpu": 0.1}),
        param_space={"name": tune.grid_search(order)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(storage), name="replay", verbose=0))
    return {result.config["name"]: int(result.metrics["epoch"]) for result in tuner.fit()}


def outcome(epochs: dict[str, int], max_epochs: int, summary: dict) -> dict:
    """The sweet spot among the grid's variants of the scales that trained to the end, and the epochs used."""
    from cluster.tuning.pareto import choose

    finished = {name for name, n in epochs.items() if n == max_epochs}
    rows = [row for row in summary["variants"] if any(row["name"].startswith(f"{scale}-") for scale in finished)]
    choice = choose(rows, summary["constraints"], summary.get("objective", "accuracy"))
    used = sum(epochs.values())
    accuracy = {row["name"]: row["accuracy"] for row in summary["variants"]}
    grid = summary["sweet_spot"]
    # One standard error of the grid sweet spot's test accuracy (a binomial proportion over the test rows).
    rows_tested = next((row.get("num_test_samples") for row in summary["variants"] if row["name"] == grid), None)
    error = (accuracy[grid] * (1 - accuracy[grid]) / rows_tested) ** 0.5 if grid and rows_tested else 0.0
    return {"scale_trial_epochs": epochs, "epochs_used": used, "epochs_full_grid": max_epochs * len(epochs),
            "epoch_fraction": used / (max_epochs * len(epochs)),
            "stopped": sorted(name for name in epochs if name not in finished),
            "sweet_spot": choice.sweet_spot, "same_sweet_spot": choice.sweet_spot == grid,
            "within_one_standard_error": bool(choice.sweet_spot and grid
                                              and accuracy[grid] - accuracy[choice.sweet_spot] <= error)}


def replay_run(run: Path) -> dict:
    """Every scheduler setting of SETTINGS replayed on a finished grid sweep's run folder."""
    from ray.tune.schedulers import ASHAScheduler

    from cluster.data.pipeline import prepare
    from cluster.spec import validate_document
    from cluster.tuning.asha import NoiseAwareASHA
    from cluster.tuning.space import expand
    from cluster.tuning.sweep import smallest_first

    summary = json.loads((run / "summary.json").read_text())
    spec = validate_document(yaml.safe_load((run / "spec.yaml").read_text()), str(run / "spec.yaml"))
    validation_rows = prepare(spec.data, spec.train.seed).plan.validation_rows
    curves = learning_curves(run)
    scales, _ = expand(spec.search, spec.train.seed)
    order = [s.name for s in smallest_first(scales, spec.data) if s.name in curves]
    max_epochs = spec.train.epochs
    common.connect()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for grace, factor in SETTINGS:
            options = dict(metric="val_accuracy", mode="max", time_attr="epoch", max_t=max_epochs,
                           grace_period=grace, reduction_factor=factor)
            for name, scheduler in (("ray-asha", ASHAScheduler(**options)),
                                    ("noise-aware-asha", NoiseAwareASHA(validation_rows, **options))):
                epochs = replay(curves, order, scheduler, Path(scratch) / f"{name}-{grace}-{factor}")
                rows.append({"scheduler": name, "grace_epochs": grace, "reduction_factor": factor,
                             **outcome(epochs, max_epochs, summary)})
    return {"run": str(run), "grid_sweet_spot": summary["sweet_spot"], "validation_rows": validation_rows,
            "order": order, "curves": curves, "replays": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path.home() / "sweetspot_results" / "fashion-sweep")
    parser.add_argument("--output", type=Path, default=common.RESULTS / "asha_replay.json")
    args = parser.parse_args()
    record = replay_run(args.run.expanduser())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown(record))


def section(path: Path, heading: str) -> list[str]:
    """The replay as a Markdown section for the docs (docs/results.md, docs/benchmarks.md); empty if not run."""
    if not path.exists():
        return []
    return [heading, "",
            "Two live runs differ by more than their scheduler (multi-worker training is not bit-reproducible), "
            "so each scheduler is also replayed, under real Tune, on the grid run's recorded validation "
            "accuracies (`python -m bench.asha_replay`, `bench/results/asha_replay.json`); its sweet spot is "
            "chosen from the grid's measured variants of the scales it let finish.", "",
            markdown(json.loads(path.read_text())), ""]


def markdown(record: dict) -> str:
    lines = [f"Replayed on `{record['run']}` (grid sweet spot {record['grid_sweet_spot']}; "
             f"{record['validation_rows']:,} validation rows; trials smallest first: {', '.join(record['order'])}).", "",
             "| scheduler | grace | reduction factor | trial-epochs | stopped | sweet spot | same as grid |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in record["replays"]:
        stopped = ", ".join(f"{s} @{r['scale_trial_epochs'][s]}" for s in r["stopped"]) or "none"
        lines.append(f"| {r['scheduler']} | {r['grace_epochs']} | {r['reduction_factor']} | {r['epochs_used']}/"
                     f"{r['epochs_full_grid']} ({r['epoch_fraction']:.0%}) | {stopped} | {r['sweet_spot']} | "
                     f"{'yes' if r['same_sweet_spot'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

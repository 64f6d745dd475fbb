"""Render the full Fashion-MNIST result tables from finished runs' summary.json files.

    python -m bench.tables [--storage ~/sweetspot_results] > docs/results.md

Reads the runs of configs/train_full.yaml, configs/compress_full.yaml (and any
further compress runs named with --compress), configs/evaluate_full.yaml and
configs/sweep_full.yaml (its full grid, and with `--set tune.scheduler=asha
--set name=fashion-sweep-asha` the same sweep under ASHA); prints nothing it did
not read from them. `python -m bench --only frontier` leaves its runs under
~/sweetspot_bench/default/runs (`--train frontier-default-cnn --sweep frontier-full`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.reporting import verdict
from cluster.results import CompressSummary, EvaluateSummary, SweepSummary, TrainSummary, VariantResult, read_summary
from cluster.tables import render, variant_table


def load(storage: Path, name: str):
    """The run's typed summary, or None when it has none."""
    path = storage / name / "summary.json"
    return read_summary(json.loads(path.read_text())) if path.exists() else None


def train_table(train: TrainSummary) -> list[str]:
    resources = train.resources
    curve = ", ".join(f"{p.fraction:.0%}: {p.test_accuracy:.4f}" for p in train.data_efficiency.learning_curve)
    rows = [
        ["test accuracy (Keras / float TFLite)", f"{train.test_accuracy:.4f} / {train.tflite_test_accuracy:.4f}"],
        ["epochs", str(train.epochs_completed)],
        ["training throughput", f"{train.samples_per_second:.0f} samples/s ({train.samples_seen} samples in "
                                f"{train.train_seconds:.0f} s of fit)"],
        ["Ray Train run wall time", f"{resources.wall_seconds:.0f} s"],
        ["worker CPU seconds / reserved", f"{resources.worker_cpu_seconds:.0f} / "
                                          f"{resources.reserved_cpu_seconds:.0f} ({resources.cpu_utilisation:.0%})"],
        ["peak RSS per worker", ", ".join(f"{v / 2**20:.0f} MiB" for v in resources.peak_rss_bytes_per_worker.values())],
        ["learning curve (test accuracy by train fraction)", curve]]
    return [f"## Training: default CNN, full Fashion-MNIST, {train.workers} Ray Train worker(s)", "",
            render(["figure", "value"], rows, markdown=True), ""]


def compress_table(summary: CompressSummary) -> list[str]:
    return ["## Compression: every variant's TFLite file, against the float TFLite baseline", "",
            variant_table(summary, wide=True, markdown=True), ""]


def evaluate_table(evaluation: EvaluateSummary) -> list[str]:
    lines = ["## Float vs int8, measured side by side in one Ray task (1 thread)", "",
             variant_table(evaluation, wide=True, markdown=True)]
    f, q = evaluation.variant("tflite-float"), evaluation.variant("tflite-int8")
    if f and q:
        lines += ["", f"int8 / float TFLite: p50 latency {q.latency_ms_p50 / f.latency_ms_p50:.2f}x, "
                      f"p95 {q.latency_ms_p95 / f.latency_ms_p95:.2f}x, throughput @256 "
                      f"{q.throughput_sps['256'] / f.throughput_sps['256']:.2f}x, gzip size "
                      f"{q.size_bytes_gzip / f.size_bytes_gzip:.3f}x."]
    return lines + [""]


def sweep_table(sweep: SweepSummary, title: str) -> list[str]:
    limits = ", ".join(f"{k} {v:g}" for k, v in sweep.constraints.items() if v is not None)
    lines = [f"## {title}", "", f"Constraints: {limits}; objective: {sweep.objective}. The float baseline is "
             f"{sweep.baseline}.", "", variant_table(sweep, wide=True, markdown=True), "", verdict(sweep)]
    lines.append(f"Scale trials: {sweep.scale_trial_epochs_used} of {sweep.scale_trial_epochs_full_grid} "
                 f"trial-epochs trained ({sweep.scale_trial_epochs}); stopped early: "
                 f"{', '.join(sweep.stopped_early) or 'none'}.")
    return lines + [""]


def asha_vs_grid(asha: SweepSummary, grid: SweepSummary, label: str = "ASHA") -> str:
    used, full = asha.scale_trial_epochs_used, grid.scale_trial_epochs_used
    same = asha.sweet_spot == grid.sweet_spot
    stopped = ", ".join(f"{name} after {asha.scale_trial_epochs[name]}" for name in asha.stopped_early)
    text = (f"{label}: sweet spot {asha.sweet_spot} {'is' if same else 'is not'} the grid's "
            f"({grid.sweet_spot}); it trained {used} of the grid's {full} scale trial-epochs "
            f"({used / full:.0%}); stopped early: {stopped or 'none'}.")
    if not same:
        picks = (grid.sweet_spot, asha.sweet_spot)
        text += " Accuracy of the two picks in the grid run and in this run: " + "; ".join(
            f"{name} {accuracy_of(grid, name)} and {accuracy_of(asha, name)}" for name in picks) + "."
    return text


def accuracy_of(run: SweepSummary, name: str) -> str:
    row = run.variant(name)
    return "not trained" if row is None else f"{row.accuracy:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=str(Path.home() / "sweetspot_results"))
    parser.add_argument("--train", default="fashion-cnn")
    parser.add_argument("--compress", nargs="+", default=["fashion-cnn-compressed"])
    parser.add_argument("--evaluate", default="fashion-cnn-float-vs-int8")
    parser.add_argument("--sweep", default="fashion-sweep", help="the run of configs/sweep_full.yaml (its full grid)")
    parser.add_argument("--sweep-asha", default="fashion-sweep-asha", help="the same sweep with tune.scheduler=asha")
    parser.add_argument("--sweep-without-margin", default="fashion-sweep-asha-nomargin",
                        help="the ASHA sweep run before the noise margin, when kept")
    args = parser.parse_args()
    storage = Path(args.storage).expanduser()
    out = ["# Results on full Fashion-MNIST (60,000 train / 10,000 test), 2-core machine", "",
           "Generated by `python -m bench.tables` from the runs' summary.json files.", ""]
    train = load(storage, args.train)
    if train:
        out += train_table(train)
    # The float TFLite file of the train run is every compress run's baseline.
    base = VariantResult.model_validate({**train.models.tflite.model_dump(), "name": "baseline"}) if train else None
    rows = [base] if base else []
    for name in args.compress:
        # Each variant's record is written as soon as it is measured, so a stopped run still counts.
        for record in sorted((storage / name / "variants").glob("*/record.json")):
            rows.append(VariantResult.model_validate_json(record.read_text()))
    if base and len(rows) > 1:
        rows = sorted((row.compared_with(base) for row in rows), key=lambda r: -r.size_bytes_gzip)
        out += compress_table(CompressSummary(name="compress", baseline="baseline", baseline_source=args.train,
                                              variants=rows))
    evaluation = load(storage, args.evaluate)
    if evaluation:
        out += evaluate_table(evaluation)
    grid, asha = load(storage, args.sweep), load(storage, args.sweep_asha)
    if grid:
        out += sweep_table(grid, f"Sweep: configs/sweep_full.yaml, {len(grid.scale_trial_epochs or {})} scales, "
                                 "full grid")
    if asha:
        out += sweep_table(asha, "The same sweep with ASHA on the scale trials")
    if grid and asha:
        out += ["## ASHA against the full grid", "",
                "ASHA stops a scale at a rung only when its validation accuracy is more than one standard error "
                "of that estimate (about 0.5 pt on 6,000 validation rows) below the rung's cutoff "
                "(`cluster/tuning/asha.py`).", "",
                "- " + asha_vs_grid(asha, grid)]
        earlier = load(storage, args.sweep_without_margin)
        if earlier:
            out += ["- " + asha_vs_grid(earlier, grid, "Ray's ASHA without the margin (an earlier run, "
                                                      f"`{args.sweep_without_margin}`)")]
        out.append("")
    from bench.asha_replay import section

    out += section(Path(__file__).parent / "results" / "asha_replay.json",
                   "### The schedulers replayed on the grid's own learning curves")
    print("\n".join(out))


if __name__ == "__main__":
    main()

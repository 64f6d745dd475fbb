"""Render the full Fashion-MNIST result tables from finished runs' summary.json files.

    python -m bench.tables [--storage ~/sweetspot_results] > docs/results.md

Reads the runs of configs/train_full.yaml, configs/compress_full.yaml (and any
further compress runs named with --compress), configs/evaluate_full.yaml and
configs/sweep_full.yaml (ASHA, and its full grid: `--set tune.scheduler=fifo
--set name=fashion-sweep-grid`); prints nothing it did not read from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(storage: Path, name: str) -> dict | None:
    path = storage / name / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def train_table(train: dict) -> list[str]:
    resources = train["resources"]
    curve = ", ".join(f"{p['fraction']:.0%}: {p['test_accuracy']:.4f}" for p in train["data_efficiency"]["learning_curve"])
    return [
        "## Training: default CNN, full Fashion-MNIST, 2 Ray Train workers (MultiWorkerMirroredStrategy)", "",
        "| figure | value |", "| --- | --- |",
        f"| test accuracy (Keras / float TFLite) | {train['test_accuracy']:.4f} / {train['tflite_test_accuracy']:.4f} |",
        f"| epochs | {train['epochs_completed']} |",
        f"| training throughput | {train['samples_per_second']:.0f} samples/s ({train['samples_seen']} samples in "
        f"{train['train_seconds']:.0f} s of fit) |",
        f"| Ray Train run wall time | {resources['wall_seconds']:.0f} s |",
        f"| worker CPU seconds / reserved | {resources['worker_cpu_seconds']:.0f} / {resources['reserved_cpu_seconds']:.0f} "
        f"({resources['cpu_utilisation']:.0%}) |",
        f"| peak RSS per worker | {', '.join(f'{int(v) / 2**20:.0f} MiB' for v in resources['peak_rss_bytes_per_worker'].values())} |",
        f"| learning curve (test accuracy by train fraction) | {curve} |", ""]


def compress_table(rows: list[dict], base: dict) -> list[str]:
    lines = ["## Compression: every variant's TFLite file, against the float TFLite baseline", "",
             "| variant | technique | TFLite accuracy | drop (pt) | gzip bytes | size ratio | sparsity |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ratio = base["size_bytes_gzip"] / row["size_bytes_gzip"]
        drop = 100 * (base["accuracy"] - row["accuracy"])
        lines.append(f"| {row['name']} | {row['technique']} | {row['accuracy']:.4f} | {drop:+.2f} | "
                     f"{row['size_bytes_gzip']:,} | {ratio:.1f}x | {row.get('sparsity', 0):.3f} |")
    return lines + [""]


def evaluate_table(evaluation: dict) -> list[str]:
    rows = {r["name"]: r for r in evaluation["variants"]}
    lines = ["## Float vs int8, measured side by side in one Ray task (1 thread)", "",
             "| artifact | accuracy | params | MACs/sample | gzip bytes | p50 ms | p95 ms | p99 ms | samples/s @32 | "
             "samples/s @256 | peak RSS MiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r.get('params') or '–'} | {r.get('flops') or '–'} | "
                     f"{r['size_bytes_gzip']:,} | {r['latency_ms_p50']:.3f} | {r['latency_ms_p95']:.3f} | "
                     f"{r['latency_ms_p99']:.3f} | {r['throughput_sps']['32']:.0f} | {r['throughput_sps']['256']:.0f} | "
                     f"{(r.get('peak_rss_bytes') or 0) / 2**20:.0f} |")
    if "tflite-float" in rows and "tflite-int8" in rows:
        f, q = rows["tflite-float"], rows["tflite-int8"]
        lines += ["", f"int8 / float TFLite: p50 latency {q['latency_ms_p50'] / f['latency_ms_p50']:.2f}x, "
                      f"p95 {q['latency_ms_p95'] / f['latency_ms_p95']:.2f}x, throughput @256 "
                      f"{q['throughput_sps']['256'] / f['throughput_sps']['256']:.2f}x, gzip size "
                      f"{q['size_bytes_gzip'] / f['size_bytes_gzip']:.3f}x."]
    return lines + [""]


def sweep_table(sweep: dict, title: str) -> list[str]:
    base = next(r for r in sweep["variants"] if r["name"] == sweep["baseline"])
    lines = [f"## {title}", "",
             f"Constraints: {', '.join(f'{k} {v:g}' for k, v in sweep['constraints'].items() if v is not None)}; "
             f"objective: {sweep['objective']}. Sizes are gzip bytes of the TFLite file; the float baseline is "
             f"{sweep['baseline']}. Pareto (size) members are marked *.", "",
             "| variant | params | TFLite accuracy | drop (pt) | gzip bytes | size ratio | p95 ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    front = set(sweep["pareto"]["size_bytes_gzip"])
    for row in sorted(sweep["variants"], key=lambda r: -r["size_bytes_gzip"]):
        mark = "**" if row["name"] == sweep["sweet_spot"] else ""
        lines.append(f"| {mark}{row['name']}{mark}{' *' if row['name'] in front else ''} | {row.get('params') or '–'} | "
                     f"{row['accuracy']:.4f} | {100 * (base['accuracy'] - row['accuracy']):+.2f} | "
                     f"{row['size_bytes_gzip']:,} | {base['size_bytes_gzip'] / row['size_bytes_gzip']:.1f}x | "
                     f"{row['latency_ms_p95']:.3f} |")
    best = next((r for r in sweep["variants"] if r["name"] == sweep["sweet_spot"]), None)
    lines.append("")
    if best:
        lines.append(f"Sweet spot: **{best['name']}**, {best['accuracy']:.4f} at {best['size_bytes_gzip']:,} B, "
                     f"{base['size_bytes_gzip'] / best['size_bytes_gzip']:.1f}x smaller than the float baseline, "
                     f"{100 * (base['accuracy'] - best['accuracy']):+.2f} pt.")
    else:
        lines.append(f"No variant meets every constraint; the closest is {sweep['closest']}.")
    lines.append(f"Scale trials: {sweep['scale_trial_epochs_used']} of {sweep['scale_trial_epochs_full_grid']} "
                 f"trial-epochs trained ({sweep['scale_trial_epochs']}); stopped early: "
                 f"{', '.join(sweep['stopped_early']) or 'none'}.")
    return lines + [""]


def asha_vs_grid(asha: dict, grid: dict, label: str = "ASHA") -> str:
    used, full = asha["scale_trial_epochs_used"], grid["scale_trial_epochs_used"]
    same = asha["sweet_spot"] == grid["sweet_spot"]
    stopped = ", ".join(f"{name} after {asha['scale_trial_epochs'][name]}" for name in asha["stopped_early"])
    text = (f"{label}: sweet spot {asha['sweet_spot']} {'is' if same else 'is not'} the grid's "
            f"({grid['sweet_spot']}); it trained {used} of the grid's {full} scale trial-epochs "
            f"({used / full:.0%}); stopped early: {stopped or 'none'}.")
    if not same:
        picks = (grid["sweet_spot"], asha["sweet_spot"])
        text += " Accuracy of the two picks in the grid run and in this run: " + "; ".join(
            f"{name} {accuracy_of(grid, name)} and {accuracy_of(asha, name)}" for name in picks) + "."
    return text


def accuracy_of(run: dict, name: str) -> str:
    return next((f"{r['accuracy']:.4f}" for r in run["variants"] if r["name"] == name), "not trained")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=str(Path.home() / "sweetspot_results"))
    parser.add_argument("--train", default="fashion-cnn")
    parser.add_argument("--compress", nargs="+", default=["fashion-cnn-compressed"])
    parser.add_argument("--evaluate", default="fashion-cnn-float-vs-int8")
    parser.add_argument("--sweep", default="fashion-sweep", help="the ASHA sweep of configs/sweep_full.yaml")
    parser.add_argument("--sweep-grid", default="fashion-sweep-grid", help="the same sweep with tune.scheduler=fifo")
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
    base = dict(train["models"]["tflite"], name="baseline", technique="float") if train else None
    rows = [base] if base else []
    for name in args.compress:
        # Each variant's record is written as soon as it is measured, so a stopped run still counts.
        for record in sorted((storage / name / "variants").glob("*/record.json")):
            rows.append(json.loads(record.read_text()))
    if base and len(rows) > 1:
        out += compress_table(sorted(rows, key=lambda r: -r["size_bytes_gzip"]), base)
    evaluation = load(storage, args.evaluate)
    if evaluation:
        out += evaluate_table(evaluation)
    grid, asha = load(storage, args.sweep_grid), load(storage, args.sweep)
    if grid:
        out += sweep_table(grid, "Sweep: six CNN scales x {float, int8, pruned 80 % + int8}, full grid")
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

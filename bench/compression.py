"""Compression on full Fashion-MNIST: our variants against the float baseline, the toolkit's own recipe and the literature.

Our points come from the real pipeline: a `kind: train` job trains the float
CNN baseline, a `kind: compress` job builds and measures every variant from it
(each fine-tuned step a Ray Train run, every figure measured on the TFLite
file); the parameter-efficient model of `bench/tiny_model.py` adds its points
when that module is present. The toolkit's tutorial recipe
(`shared/anchors/tfmot_recipe.py`, unchanged) runs as a subprocess on the same
data in the same bench run, `anchor_runs` times (median). Literature rows are
quoted, not measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench import common

NAME = "compression"
PRUNE_EXCLUDE = ["conv1", "logits"]
DEFAULT = {
    # The float baseline: the run of configs/train_full.yaml (10 epochs) when it exists, else a train job of
    # `baseline_epochs` in this bench run. Either way the compress job measures it here, beside its variants.
    "full_data": True, "baseline_run": "~/sweetspot_results/fashion-cnn", "baseline_epochs": 3,
    "fine_tune_epochs": 2, "anchor_runs": 3,
    # The tiny model runs its own recipe (configs/tiny_full.yaml) unless these cut its epochs.
    "tiny_model": True, "tiny_epochs": None, "tiny_fine_tune_epochs": None,
    "variants": [
        {"name": "int8", "pipeline": [{"quantize": {"mode": "int8"}}]},
        {"name": "pruned80-int8", "pipeline": [{"prune": {"final_sparsity": 0.8, "exclude": PRUNE_EXCLUDE}},
                                               {"quantize": {"mode": "int8"}}]},
        {"name": "pruned95-int8", "pipeline": [{"prune": {"final_sparsity": 0.95, "exclude": PRUNE_EXCLUDE}},
                                               {"quantize": {"mode": "int8"}}]},
    ],
}
QUICK = {**DEFAULT, "full_data": False, "baseline_run": None, "baseline_epochs": 1, "fine_tune_epochs": 1, "anchor_runs": 1,
         "tiny_model": False, "variants": DEFAULT["variants"][:1]}
EVALUATION = common.EVALUATION
# The sweet spot the inference benchmark times: the most accurate variant under the
# full-data sweep's constraints (configs/sweep_full.yaml).
SWEET_SPOT_CONSTRAINTS = {"max_size_kb": 50, "max_latency_ms_p95": 1.0}
LITERATURE = [
    {"name": "TFMOT pruning tutorial (MNIST)", "technique": "prune 50→80 %", "size_ratio": 3.0,
     "accuracy_drop_pt": None, "source": "tensorflow.org/model_optimization/guide/pruning/pruning_with_keras"},
    {"name": "TFMOT pruning tutorial (MNIST)", "technique": "prune + dynamic-range int8", "size_ratio": 10.0,
     "accuracy_drop_pt": None, "source": "same tutorial"},
    {"name": "Deep Compression, LeNet-300-100 (MNIST)", "technique": "prune + quantize + Huffman",
     "size_ratio": 40.0, "accuracy_drop_pt": 0.0, "source": "Han et al., ICLR 2016, Table 1"},
]
TARGETS = [
    {"name": "must", "requirement": "≥ 10× at ≤ 1.0 pt", "min_ratio": 10.0, "max_drop_pt": 1.0},
    {"name": "aim", "requirement": "≥ 40× at ≤ 0.5 pt", "min_ratio": 40.0, "max_drop_pt": 0.5},
]
FRONTIER_TARGET = {"name": "frontier", "requirement": "accuracy ≥ 0.91 at ≤ 8.2 KB gzip", "min_accuracy": 0.91,
                   "max_bytes": 8200}


# ---------------------------------------------------------------- our pipeline


def float_baseline(settings: dict, ctx: common.Context) -> tuple[Path, dict]:
    """The float CNN's train-job folder: `baseline_run` if it holds a model, else a train job run now."""
    existing = Path(settings["baseline_run"]).expanduser() if settings.get("baseline_run") else None
    if existing and (existing / "model.keras").exists() and (existing / "summary.json").exists():
        summary = json.loads((existing / "summary.json").read_text())
        common.log(f"compression: float baseline from {existing} ({summary['epochs_completed']} epochs)")
        return existing, {"baseline_source": str(existing), "train_wall_seconds": None,
                          "baseline_test_accuracy": summary["test_accuracy"],
                          "baseline_epochs": summary["epochs_completed"]}
    storage = ctx.scratch / "compression"
    train = common.cnn_train_document("bench-cnn-float", common.data_section(settings["full_data"]),
                                      settings["baseline_epochs"], storage)
    summary, wall = common.run_job(train, ctx)
    return storage / "bench-cnn-float", {"baseline_source": "trained in this bench run", "train_wall_seconds": wall,
                                         "baseline_test_accuracy": summary["test_accuracy"],
                                         "baseline_epochs": summary["epochs_completed"]}


def cnn_points(settings: dict, ctx: common.Context) -> tuple[list[dict], dict]:
    """The float CNN (a train job's), compressed by a compress job; every row measured on its TFLite file here."""
    storage = ctx.scratch / "compression"
    data = common.data_section(settings["full_data"])
    baseline, jobs = float_baseline(settings, ctx)
    compress = {
        "version": 1, "kind": "compress", "name": "bench-cnn-compressed", "baseline": str(baseline),
        "data": data, "augment": common.AUGMENT,
        "fine_tune": {"epochs": settings["fine_tune_epochs"], "global_batch_size": 256, "schedule": "constant",
                      "optimizer": {"name": "adam", "learning_rate": 0.0003}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1}, "evaluation": EVALUATION,
        "variants": settings["variants"], "output": {"storage": str(storage), "overwrite": True}}
    summary, wall = common.run_job(compress, ctx)
    rows = [{**{k: v for k, v in row.items() if not isinstance(v, (dict, list)) or k == "pipeline"},
             "source": "cnn (compress job)"} for row in summary["variants"]]
    return rows, {**jobs, "compress_wall_seconds": wall}


def tiny_points(settings: dict, ctx: common.Context, base: dict) -> list[dict]:
    """The parameter-efficient model's point: `python -m bench.tiny_model` (its recipe), when that module exists.

    Run in a fresh process (it fixes TF's threads); `tiny_epochs` / `tiny_fine_tune_epochs` cut its
    recipe's epochs when set. Its TFLite file is kept and timed like the others (batch-1 p95).
    """
    if not settings["tiny_model"]:
        return []
    if not (common.ROOT / "bench" / "tiny_model.py").exists():
        common.log("compression: bench/tiny_model.py is not there; its point is left out")
        return []
    import os

    from cluster.evaluation.latency import measure_tflite_latency

    tflite = ctx.scratch / "compression" / "tiny.tflite"
    command = [sys.executable, "-m", "bench.tiny_model", "--save-tflite", str(tflite),
               "--threads", str(os.cpu_count()), "--data", str(common.FULL_DATA if settings["full_data"]
                                                              else anchor_data_dir(settings, ctx.scratch))]
    for flag, key in (("--epochs", "tiny_epochs"), ("--fine-tune-epochs", "tiny_fine_tune_epochs")):
        if settings.get(key):
            command += [flag, str(settings[key])]
    common.log(f"compression: tiny model: {' '.join(command[1:])}")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=common.ROOT, env=common.client_env(), capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"bench.tiny_model failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout[done.stdout.rindex("\n{") + 1:])
    latency = measure_tflite_latency(tflite, num_threads=EVALUATION["num_threads"], batch_sizes=(256,),
                                     repetitions=EVALUATION["repetitions"])
    recipe = result.get("recipe", {})
    point = {"name": f"tiny-{recipe.get('family', 'model')}", "technique": "+".join(
                 next(iter(step)) for step in recipe.get("pipeline", [])) or "float",
             "accuracy": result["tflite_accuracy"], "size_bytes_gzip": result["size_bytes_gzip"],
             "size_bytes": result["size_bytes"], "params": result.get("params"),
             "latency_ms_p50": latency.latency_ms_p50, "latency_ms_p95": latency.latency_ms_p95,
             "artifact": str(tflite), "source": "tiny model (bench/tiny_model.py)", "recipe": recipe,
             "wall_seconds": time.perf_counter() - started}
    return with_ratios([point], base)


def with_ratios(rows: list[dict], base: dict) -> list[dict]:
    for row in rows:
        row["size_ratio"] = base["size_bytes_gzip"] / row["size_bytes_gzip"]
        row["accuracy_drop_pt"] = 100.0 * (base["accuracy"] - row["accuracy"])
    return rows


# ---------------------------------------------------------------- the toolkit's recipe


def anchor_data_dir(settings: dict, scratch: Path) -> Path:
    """The recipe reads `<dir>/train-*.parquet` and `<dir>/test-*.parquet`; the sample gets such names by symlink."""
    if settings["full_data"]:
        return common.FULL_DATA
    folder = scratch / "anchor-sample"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        link = folder / f"{split}-00000-of-00001.parquet"
        if not link.exists():
            link.symlink_to(common.SAMPLE / f"{split}.parquet")
    return folder


def run_anchor(data_dir: Path) -> dict:
    """One run of the recipe, unchanged; it prints one JSON document."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(common.ANCHOR_RECIPE), str(data_dir)], capture_output=True,
                          text=True, env=common.client_env(), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"tfmot_recipe.py failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    text = done.stdout[done.stdout.index("{"):]
    return {**json.loads(text), "wall_seconds": time.perf_counter() - started}


def recipe_runs(data_dir: Path, count: int, ctx: common.Context, who: str) -> list[dict]:
    """`count` runs of the recipe on `data_dir`; runs another benchmark of this bench run already made on the
    same data are reused (every figure stays side by side with ours, in the same run), the rest are run now."""
    runs = ctx.recipe_runs.setdefault(str(data_dir), [])
    if runs and count:
        common.log(f"{who}: reusing {min(len(runs), count)} tfmot recipe run(s) this bench run made on {data_dir}")
    for index in range(len(runs), count):
        common.log(f"{who}: tfmot recipe run {index + 1}/{count} on {data_dir}")
        runs.append(run_anchor(data_dir))
    return runs[:count]


def anchor_points(runs: list[dict]) -> dict:
    pick = lambda key: common.median(r[key] for r in runs)  # noqa: E731
    return {
        "runs": len(runs),
        "dense": {"name": "tfmot recipe: dense", "accuracy": pick("base_tflite_acc"),
                  "size_bytes_gzip": pick("gzip_base_tflite")},
        "pruned_quantized": {"name": "tfmot recipe: pruned + quantized", "accuracy": pick("pruned_quant_tflite_acc"),
                             "size_bytes_gzip": pick("gzip_pruned_quant_tflite"),
                             "ratio_vs_its_dense": pick("ratio_pruned_quant_vs_base_tflite")},
    }


# ---------------------------------------------------------------- targets


def check_targets(points: list[dict], anchor: dict) -> list[dict]:
    results = []
    for target in TARGETS:
        meeting = [p for p in points if p["size_ratio"] >= target["min_ratio"]
                   and p["accuracy_drop_pt"] <= target["max_drop_pt"]]
        best = max(meeting, key=lambda p: p["size_ratio"]) if meeting else \
            max((p for p in points if p["accuracy_drop_pt"] <= target["max_drop_pt"]),
                key=lambda p: p["size_ratio"], default=None)
        results.append({**target, "met": bool(meeting), "point": best and best["name"],
                        "figure": best and f"{best['size_ratio']:.1f}× at {best['accuracy_drop_pt']:+.2f} pt"})
    small = [p for p in points if p["size_bytes_gzip"] <= FRONTIER_TARGET["max_bytes"]]
    best = max(small, key=lambda p: p["accuracy"], default=None)
    figure = best and f"{best['accuracy']:.4f} at {best['size_bytes_gzip'] / 1000:.1f} KB"
    if anchor:
        recipe = anchor["pruned_quantized"]
        figure = (figure or "no point ≤ 8.2 KB") + (f" (recipe: {recipe['accuracy']:.4f} at "
                                                     f"{recipe['size_bytes_gzip'] / 1000:.1f} KB)")
    results.append({**FRONTIER_TARGET, "met": bool(best and best["accuracy"] >= FRONTIER_TARGET["min_accuracy"]),
                    "point": best and best["name"], "figure": figure})
    return results


def sweet_spot(points: list[dict]) -> dict | None:
    """The sweep's choice among our points (`cluster/tuning/pareto.py: choose`); if none is feasible, the closest."""
    from cluster.tuning.pareto import choose

    choice = choose([p for p in points if p.get("artifact")], SWEET_SPOT_CONSTRAINTS, "accuracy")
    name = choice.sweet_spot or choice.closest
    chosen = next((p for p in points if p["name"] == name), None)
    return chosen and {"name": chosen["name"], "artifact": chosen["artifact"], "feasible": bool(choice.sweet_spot),
                       "constraints": SWEET_SPOT_CONSTRAINTS}


def run(settings: dict, ctx: common.Context) -> dict:
    from cluster.tuning.pareto import pareto_front

    anchor_runs = recipe_runs(anchor_data_dir(settings, ctx.scratch), settings["anchor_runs"], ctx, "compression")
    rows, jobs = cnn_points(settings, ctx)
    base = rows[0]
    points = rows + tiny_points(settings, ctx, base)
    anchor = anchor_points(anchor_runs)
    chosen = sweet_spot(points)
    return {"settings": settings, "baseline": base["name"], "points": points, "jobs": jobs,
            "pareto": pareto_front(points, "size_bytes_gzip"), "anchor_runs": anchor_runs, "anchor": anchor,
            "literature": LITERATURE, "targets": check_targets(points[1:], anchor),
            "sweet_spot": chosen,
            "baseline_artifact": base["artifact"]}

"""The main job against the toolkit's own recipe on the bundled sample: does our frontier beat it, and how fast.

Runs `configs/quickstart.yaml` (the README's main job, its driver against the
local cluster) and, in the same bench run, the TF Model Optimization Toolkit's
tutorial recipe (`shared/anchors/tfmot_recipe.py`, unchanged) `recipe_runs`
times on the same sample (median). A variant dominates the recipe when its
gzipped TFLite file is no larger and its TFLite test accuracy no lower.
"""

from __future__ import annotations

import yaml

from bench import common
from bench.compression import anchor_data_dir, anchor_points, run_anchor
from cluster.spec import apply_overrides

NAME = "frontier"
QUICKSTART_SECONDS = 360  # issue target: the main job in <= 6 min on 2 cores
DEFAULT = {"spec": "configs/quickstart.yaml", "overrides": [], "recipe_runs": 3}
QUICK = {**DEFAULT, "recipe_runs": 1, "overrides": [
    "train.epochs=1", "search.widths=[0.25]",
    "search.pipelines=[{name: float, pipeline: []}, {name: int8, pipeline: [{quantize: {mode: int8}}]}]"]}


def run(settings: dict, ctx: common.Context) -> dict:
    document = apply_overrides(yaml.safe_load((common.ROOT / settings["spec"]).read_text()), settings["overrides"])
    document["name"] = "frontier-quickstart"
    document["data"] = {**document["data"], "train": str(common.SAMPLE / "train.parquet"),
                        "test": str(common.SAMPLE / "test.parquet")}
    document["output"] = {"storage": str(ctx.scratch / "runs")}
    summary, wall = common.run_job(document, ctx)
    data_dir = anchor_data_dir({"full_data": False}, ctx.scratch)
    runs = []
    for index in range(settings["recipe_runs"]):
        common.log(f"frontier: tfmot recipe run {index + 1}/{settings['recipe_runs']} on the sample")
        runs.append(run_anchor(data_dir))
    recipe = anchor_points(runs)["pruned_quantized"]
    points = [{key: v.get(key) for key in ("name", "technique", "accuracy", "size_bytes_gzip", "latency_ms_p95")}
              for v in summary["variants"]]
    dominating = [p["name"] for p in points if p["size_bytes_gzip"] <= recipe["size_bytes_gzip"]
                  and p["accuracy"] >= recipe["accuracy"]]
    return {"settings": settings, "quickstart_wall_seconds": wall, "points": points,
            "pareto": summary["pareto"]["size_bytes_gzip"], "sweet_spot": summary["sweet_spot"],
            "recipe": recipe, "recipe_runs": runs, "dominating": dominating,
            "targets": [
                {"requirement": "quickstart frontier dominates the recipe on the sample",
                 "figure": ", ".join(dominating) or "none", "met": bool(dominating)},
                {"requirement": f"quickstart ≤ {QUICKSTART_SECONDS // 60} min on 2 cores",
                 "figure": f"{wall:.0f} s", "met": wall <= QUICKSTART_SECONDS}]}


def section(r: dict) -> list[str]:
    recipe = r["recipe"]
    lines = ["## Frontier against the toolkit's recipe, on the bundled sample", "",
             f"`{r['settings']['spec']}` (the main job) beside `tfmot_recipe.py` run {len(r['recipe_runs'])} "
             f"time(s) on the same 6,000 / 1,000 rows (median). Quickstart wall time: "
             f"{r['quickstart_wall_seconds']:.0f} s.", "",
             "| point | technique | TFLite accuracy | gzip bytes | p95 ms | |", "| --- | --- | --- | --- | --- | --- |"]
    runs = ", ".join(f"{x['pruned_quant_tflite_acc']:.3f} at {x['gzip_pruned_quant_tflite']:,} B"
                     for x in r["recipe_runs"])
    lines.append(f"| tfmot recipe (median) | prune 50→80 % + dynamic range | {recipe['accuracy']:.4f} | "
                 f"{recipe['size_bytes_gzip']:,.0f} | – | runs: {runs} |")
    for p in sorted(r["points"], key=lambda p: p["size_bytes_gzip"]):
        flags = [f for f, on in (("sweet spot", p["name"] == r["sweet_spot"]), ("Pareto", p["name"] in r["pareto"]),
                                 ("dominates the recipe", p["name"] in r["dominating"])) if on]
        lines.append(f"| {p['name']} | {p['technique']} | {p['accuracy']:.4f} | {p['size_bytes_gzip']:,} | "
                     f"{p['latency_ms_p95']:.3f} | {', '.join(flags)} |")
    return lines + [""]

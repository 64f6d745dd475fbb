"""Our frontier against the toolkit's own recipe, on the same data in the same bench run.

Each case runs one of our sweep specs (its driver against the local cluster)
and, beside it, the TF Model Optimization Toolkit's tutorial recipe
(`shared/anchors/tfmot_recipe.py`, unchanged) `recipe_runs` times on the same
data (median). A variant dominates the recipe when its gzipped TFLite file is
no larger and its TFLite test accuracy no lower. Cases: the README's main job
(`configs/quickstart.yaml`) on the bundled sample, and `configs/frontier_full.yaml`
on full Fashion-MNIST.
"""

from __future__ import annotations

import yaml

from bench import common
from bench.compression import anchor_data_dir, anchor_points, run_anchor
from cluster.spec import apply_overrides

NAME = "frontier"
QUICKSTART_SECONDS = 360  # the main job in <= 6 min on 2 cores
SAMPLE_CASE = {"name": "sample", "spec": "configs/quickstart.yaml", "full_data": False, "overrides": [],
               "max_seconds": QUICKSTART_SECONDS}
FULL_CASE = {"name": "full", "spec": "configs/frontier_full.yaml", "full_data": True, "overrides": [],
             "max_seconds": None}
DEFAULT = {"cases": [SAMPLE_CASE, FULL_CASE], "recipe_runs": 3}
QUICK = {"recipe_runs": 1, "cases": [{**SAMPLE_CASE, "overrides": [
    "train.epochs=1", "search.widths=[0.25]",
    "search.pipelines=[{name: float, pipeline: []}, {name: int8, pipeline: [{quantize: {mode: int8}}]}]"]}]}


def run_case(case: dict, recipe_runs: int, ctx: common.Context) -> dict:
    document = apply_overrides(yaml.safe_load((common.ROOT / case["spec"]).read_text()), case["overrides"])
    document["name"] = f"frontier-{case['name']}"
    data = common.FULL_DATA if case["full_data"] else common.SAMPLE
    pattern = "{split}-*.parquet" if case["full_data"] else "{split}.parquet"
    document["data"] = {**document["data"], **{split: str(data / pattern.format(split=split))
                                               for split in ("train", "test")}}
    document["output"] = {"storage": str(ctx.scratch / "runs")}
    summary, wall = common.run_job(document, ctx)
    data_dir = anchor_data_dir({"full_data": case["full_data"]}, ctx.scratch)
    runs = []
    for index in range(recipe_runs):
        common.log(f"frontier ({case['name']}): tfmot recipe run {index + 1}/{recipe_runs}")
        runs.append(run_anchor(data_dir))
    recipe = anchor_points(runs)["pruned_quantized"]
    points = [{key: v.get(key) for key in ("name", "technique", "accuracy", "size_bytes_gzip", "latency_ms_p95")}
              for v in summary["variants"]]
    dominating = [p["name"] for p in points if p["size_bytes_gzip"] <= recipe["size_bytes_gzip"]
                  and p["accuracy"] >= recipe["accuracy"]]
    targets = [{"requirement": f"{case['name']}: the frontier dominates the recipe",
                "figure": ", ".join(dominating) or "none", "met": bool(dominating)}]
    if case["max_seconds"]:
        targets.append({"requirement": f"{case['name']}: `{case['spec']}` ≤ {case['max_seconds'] // 60} min",
                        "figure": f"{wall:.0f} s", "met": wall <= case["max_seconds"]})
    return {"case": case, "wall_seconds": wall, "points": points, "pareto": summary["pareto"]["size_bytes_gzip"],
            "sweet_spot": summary["sweet_spot"], "recipe": recipe, "recipe_runs": runs, "dominating": dominating,
            "targets": targets}


def run(settings: dict, ctx: common.Context) -> dict:
    cases = [run_case(case, settings["recipe_runs"], ctx) for case in settings["cases"]]
    return {"settings": settings, "cases": cases, "targets": [t for case in cases for t in case["targets"]]}


def section(r: dict) -> list[str]:
    lines = ["## Frontier against the toolkit's recipe", ""]
    for c in r["cases"]:
        recipe = c["recipe"]
        lines += [f"### {c['case']['name']}: `{c['case']['spec']}` ({c['wall_seconds']:.0f} s) beside "
                  f"`tfmot_recipe.py` run {len(c['recipe_runs'])} time(s) on the same data", "",
                  "| point | technique | TFLite accuracy | gzip bytes | p95 ms | |", "| --- | --- | --- | --- | --- | --- |"]
        runs = ", ".join(f"{x['pruned_quant_tflite_acc']:.3f} at {x['gzip_pruned_quant_tflite']:,} B"
                         for x in c["recipe_runs"])
        lines.append(f"| tfmot recipe (median) | prune 50→80 % + dynamic range | {recipe['accuracy']:.4f} | "
                     f"{recipe['size_bytes_gzip']:,.0f} | – | runs: {runs} |")
        for p in sorted(c["points"], key=lambda p: p["size_bytes_gzip"]):
            flags = [f for f, on in (("sweet spot", p["name"] == c["sweet_spot"]), ("Pareto", p["name"] in c["pareto"]),
                                     ("dominates the recipe", p["name"] in c["dominating"])) if on]
            lines.append(f"| {p['name']} | {p['technique']} | {p['accuracy']:.4f} | {p['size_bytes_gzip']:,} | "
                         f"{p['latency_ms_p95']:.3f} | {', '.join(flags)} |")
        lines.append("")
    return lines

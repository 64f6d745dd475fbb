"""Our frontier against the toolkit's own recipe and the default CNN, on the same data in the same bench run.

Each case runs one of our sweep specs (its driver against the local cluster)
and, beside it, the TF Model Optimization Toolkit's tutorial recipe
(`shared/anchors/tfmot_recipe.py`, unchanged) `recipe_runs` times on the same
data (median). A variant dominates the recipe when its gzipped TFLite file is
no larger and its TFLite test accuracy no lower. Cases: the README's main job
(`configs/quickstart.yaml`) on the bundled sample, and `configs/sweep_full.yaml`
on full Fashion-MNIST, where the default CNN (`configs/train_full.yaml`) is
trained in the same run: the compression ratio is its float TFLite file's gzip
size over the smallest variant within 0.5 pt of its accuracy.

The full sweep runs twice: as a user runs it (scales none of whose files can
fit `max_size_kb` are not trained: its wall time, sweet spot and trial-epochs)
and exhaustively (`search.train_too_large: true`: every scale trained, the
whole frontier, the compression ratio). The search saves when its sweet spot is
the exhaustive one's, or within one standard error of its accuracy, on at most
40 % of the exhaustive trial-epochs. ASHA is also replayed on the exhaustive
run's learning curves (`bench/asha_replay.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bench import common
from bench import sweep as sweep_bench
from bench.compression import anchor_data_dir, anchor_points, recipe_runs
from cluster.spec import apply_overrides

NAME = "frontier"
QUICKSTART_SECONDS = 360  # the main job in <= 6 min on 2 cores
FULL_SWEEP_SECONDS = 3600  # configs/sweep_full.yaml in <= 60 min on 2 cores
AIM = {"accuracy": 0.91, "size_bytes_gzip": 8200}  # >= 0.91 at <= 8.2 KB gzip (KB = 1000 B)
RATIO_DROP_PT = 0.5  # the compression ratio counts variants within this many points of the default CNN
RATIO_MUST, RATIO_AIM = 20.0, 40.0
DEFAULT_CNN_ACCURACY = 0.93
EARLY_STOP_FRACTION = 0.40  # at most this share of the exhaustive search's trial-epochs
SAMPLE_CASE = {"name": "sample", "spec": "configs/quickstart.yaml", "full_data": False, "overrides": [],
               "max_seconds": QUICKSTART_SECONDS}
FULL_CASE = {"name": "full", "spec": "configs/sweep_full.yaml", "full_data": True, "overrides": [],
             "max_seconds": FULL_SWEEP_SECONDS, "default_cnn": "configs/train_full.yaml", "exhaustive": True}
DEFAULT = {"cases": [SAMPLE_CASE, FULL_CASE], "recipe_runs": 3}
# Quick: the sweep benchmark's quick grid run, spec for spec, so `common.run_job` reuses that job when both run.
QUICK = {"recipe_runs": 1, "cases": [{**SAMPLE_CASE, "overrides": [
    *sweep_bench.grid_overrides(sweep_bench.QUICK),
    "search.pipelines=[{name: float, pipeline: []}, {name: int8, pipeline: [{quantize: {mode: int8}}]}]"]}]}


def job_document(spec: str, name: str, full_data: bool, overrides: list[str], ctx: common.Context) -> dict:
    """A config file's spec on this bench run's data and scratch storage."""
    document = apply_overrides(yaml.safe_load((common.ROOT / spec).read_text()), overrides)
    document["name"] = name
    data = common.FULL_DATA if full_data else common.SAMPLE
    pattern = "{split}-*.parquet" if full_data else "{split}.parquet"
    document["data"] = {**document["data"], **{split: str(data / pattern.format(split=split))
                                               for split in ("train", "test")}}
    document["output"] = {"storage": str(ctx.scratch / "runs")}
    return document


def default_cnn(spec: str, ctx: common.Context) -> dict:
    """The default CNN trained by a train job in this bench run: its Keras and float TFLite figures."""
    # Trained on the sweep's scaling (one worker, both cores), so both sides of the ratio train alike;
    # the learning curve's extra runs (on fractions of the data) are not part of the comparison.
    overrides = ["scaling.num_workers=1", "scaling.cpus_per_worker=2", "learning_curve=[]"]
    summary, wall = common.run_job(job_document(spec, "frontier-default-cnn", True, overrides, ctx), ctx)
    tflite = summary["models"]["tflite"]
    return {"spec": spec, "keras_accuracy": summary["test_accuracy"], "accuracy": summary["tflite_test_accuracy"],
            "size_bytes_gzip": tflite["size_bytes_gzip"], "params": tflite.get("params"), "wall_seconds": wall}


def deployed_files(case: dict, ctx: common.Context) -> dict[str, dict]:
    """The full case's TFLite files in this scratch folder, for the inference benchmark: the default CNN's
    float file, the user's sweet spot, and the smallest point within RATIO_DROP_PT of the default CNN.
    Each with the gzip size this benchmark recorded, to check the file is that run's."""
    runs, name, base = ctx.scratch / "runs", case["case"]["name"], case["default_cnn"]
    user = json.loads((runs / f"frontier-{name}" / "summary.json").read_text())
    chosen = next(v for v in user["variants"] if v["name"] == case["sweet_spot"])
    files = {"default CNN (float)": {"path": runs / "frontier-default-cnn" / "model.tflite",
                                     "size_bytes_gzip": base["size_bytes_gzip"]},
             f"sweet spot `{case['sweet_spot']}`": {"path": runs / f"frontier-{name}" / "best.tflite",
                                                    "size_bytes_gzip": chosen["size_bytes_gzip"]}}
    close = compression_ratio(case["points"], base)
    if close:
        files[f"within {RATIO_DROP_PT} pt `{close['name']}`"] = {
            "path": runs / f"frontier-{name}-exhaustive" / "variants" / close["name"] / "model.tflite",
            "size_bytes_gzip": next(p["size_bytes_gzip"] for p in case["points"] if p["name"] == close["name"])}
    return files


def compression_ratio(points: list[dict], base: dict) -> dict | None:
    """The smallest point within RATIO_DROP_PT of the default CNN's TFLite accuracy, with its ratio."""
    close = [p for p in points if drop_pt(base, p) <= RATIO_DROP_PT]
    if not close:
        return None
    best = min(close, key=lambda p: p["size_bytes_gzip"])
    return {"name": best["name"], "ratio": base["size_bytes_gzip"] / best["size_bytes_gzip"],
            "drop_pt": drop_pt(base, best)}


def drop_pt(base: dict, point: dict) -> float:
    """Accuracy points lost against `base`. Both are counts over the same test images, so the difference is
    a whole number of images: rounding drops the float error that made 0.9349 - 0.9299 exceed 0.5 pt."""
    return round(100 * (base["accuracy"] - point["accuracy"]), 9)


def standard_error(row: dict) -> float:
    """One standard error of a test accuracy: a binomial proportion over the test rows."""
    return (row["accuracy"] * (1 - row["accuracy"]) / row["num_test_samples"]) ** 0.5


def search_saving(summary: dict, exhaustive: dict) -> dict:
    """The user's sweep against the exhaustive one: trial-epochs it trained, and whether it found the sweet spot."""
    rows = {r["name"]: r for r in exhaustive["variants"]}
    ours = next((r for r in summary["variants"] if r["name"] == summary["sweet_spot"]), None)
    theirs = rows.get(exhaustive["sweet_spot"])
    used, full = summary["scale_trial_epochs_used"], exhaustive["scale_trial_epochs_used"]
    return {"sweet_spot": summary["sweet_spot"], "exhaustive_sweet_spot": exhaustive["sweet_spot"],
            "epochs_used": used, "epochs_exhaustive": full, "epoch_fraction": used / full,
            "skipped_too_large": summary.get("skipped_too_large", []),
            "accuracy": ours and ours["accuracy"], "exhaustive_accuracy": theirs and theirs["accuracy"],
            "kept": bool(ours and theirs and (ours["name"] == theirs["name"]
                                              or theirs["accuracy"] - ours["accuracy"] <= standard_error(theirs)))}


def full_data_targets(case: dict, points: list[dict], base: dict | None, saving: dict | None) -> list[dict]:
    name = case["name"]
    aimed = [p["name"] for p in points if p["size_bytes_gzip"] <= AIM["size_bytes_gzip"]
             and p["accuracy"] >= AIM["accuracy"]]
    small = [p for p in points if p["size_bytes_gzip"] <= AIM["size_bytes_gzip"]]
    best_small = max(small, key=lambda p: p["accuracy"]) if small else None
    targets = [{"requirement": f"{name}: aim ≥ {AIM['accuracy']} at ≤ {AIM['size_bytes_gzip'] / 1000:g} KB",
                "figure": (f"{best_small['accuracy']:.4f} at {best_small['size_bytes_gzip']:,} B "
                           f"(`{best_small['name']}`)") if best_small else "no point that small",
                "met": bool(aimed)}]
    if base:
        ratio = compression_ratio(points, base)
        figure = (f"{ratio['ratio']:.1f}× at {ratio['drop_pt']:+.2f} pt (`{ratio['name']}`)" if ratio
                  else f"no variant within {RATIO_DROP_PT} pt")
        for level, bound in (("must", RATIO_MUST), ("aim", RATIO_AIM)):
            targets.append({"requirement": f"{name}: {level} ≥ {bound:g}× smaller than the default CNN's float "
                                           f"TFLite at ≤ {RATIO_DROP_PT} pt", "figure": figure,
                            "met": bool(ratio and ratio["ratio"] >= bound)})
        targets.append({"requirement": f"{name}: default CNN ≥ {DEFAULT_CNN_ACCURACY} (Keras and float TFLite)",
                        "figure": f"{base['keras_accuracy']:.4f} / {base['accuracy']:.4f}",
                        "met": min(base["keras_accuracy"], base["accuracy"]) >= DEFAULT_CNN_ACCURACY})
    if saving:
        targets.append({"requirement": f"{name}: the search keeps the exhaustive search's sweet spot (or one within "
                                       f"one standard error) on ≤ {EARLY_STOP_FRACTION:.0%} of its trial-epochs",
                        "figure": (f"{saving['epochs_used']}/{saving['epochs_exhaustive']} "
                                   f"({saving['epoch_fraction']:.0%}); `{saving['sweet_spot']}` "
                                   f"{saving['accuracy'] or 0:.4f} against `{saving['exhaustive_sweet_spot']}` "
                                   f"{saving['exhaustive_accuracy'] or 0:.4f}"),
                        "met": saving["kept"] and saving["epoch_fraction"] <= EARLY_STOP_FRACTION})
    return targets


def run_case(case: dict, recipe_count: int, ctx: common.Context) -> dict:
    base = default_cnn(case["default_cnn"], ctx) if case.get("default_cnn") else None
    document = job_document(case["spec"], f"frontier-{case['name']}", case["full_data"], case["overrides"], ctx)
    summary, wall = common.run_job(document, ctx)
    shown, replay, saving = summary, None, None
    if case.get("exhaustive"):
        from bench.asha_replay import replay_run

        document = job_document(case["spec"], f"frontier-{case['name']}-exhaustive", case["full_data"],
                                [*case["overrides"], "search.train_too_large=true"], ctx)
        shown, _ = common.run_job(document, ctx)
        saving = search_saving(summary, shown)
        replay = replay_run(Path(document["output"]["storage"]) / document["name"])
        # Also where `bench.tables` and the sweep section read the replay from.
        (ctx.results / "asha_replay.json").write_text(json.dumps(replay, indent=2) + "\n")
    runs = recipe_runs(anchor_data_dir({"full_data": case["full_data"]}, ctx.scratch), recipe_count, ctx,
                       f"frontier ({case['name']})")
    recipe = anchor_points(runs)["pruned_quantized"]
    # The frontier drawn and counted is the exhaustive run's where there is one; the user's run must dominate.
    floors = shown.get("size_floors") or {}
    points = [{**{key: v.get(key) for key in ("name", "technique", "accuracy", "size_bytes_gzip", "latency_ms_p95")},
               "size_floor": floors.get(v["name"])} for v in shown["variants"]]
    dominating = [v["name"] for v in summary["variants"] if v["size_bytes_gzip"] <= recipe["size_bytes_gzip"]
                  and v["accuracy"] >= recipe["accuracy"]]
    targets = [{"requirement": f"{case['name']}: the frontier dominates the recipe",
                "figure": ", ".join(dominating) or "none", "met": bool(dominating)}]
    if case["max_seconds"]:
        targets.append({"requirement": f"{case['name']}: `{case['spec']}` ≤ {case['max_seconds'] // 60} min",
                        "figure": f"{wall:.0f} s", "met": wall <= case["max_seconds"]})
    if case["full_data"]:
        targets += full_data_targets(case, points, base, saving)
    return {"case": case, "wall_seconds": wall, "points": points, "pareto": shown["pareto"]["size_bytes_gzip"],
            "sweet_spot": summary["sweet_spot"], "recipe": recipe, "recipe_runs": runs, "dominating": dominating,
            "default_cnn": base, "replay": replay, "search_saving": saving, "targets": targets}


def run(settings: dict, ctx: common.Context) -> dict:
    cases = [run_case(case, settings["recipe_runs"], ctx) for case in settings["cases"]]
    return {"settings": settings, "cases": cases, "targets": [t for case in cases for t in case["targets"]]}


LITERATURE = [{"name": "2 conv layers, < 100K params (benchmark table)", "accuracy": 0.925, "params": 100_000},
              {"name": "14.9K-param CNN (published)", "accuracy": 0.89, "params": 14_900}]


def pareto_chart(case: dict, path: Path) -> Path:
    """The case's points and frontier with the recipe's median point and the literature anchors."""
    import base64

    from cluster.reporting import pareto_plot
    from cluster.results import ReferencePoint, SweepSummary, VariantResult

    recipe = case["recipe"]
    references = [ReferencePoint(name=f"tfmot recipe (median of {len(case['recipe_runs'])})",
                                 accuracy=recipe["accuracy"], size_bytes_gzip=recipe["size_bytes_gzip"])]
    if case.get("default_cnn"):
        base = case["default_cnn"]
        references.append(ReferencePoint(name="default CNN, float TFLite", accuracy=base["accuracy"],
                                          size_bytes_gzip=base["size_bytes_gzip"]))
    summary = SweepSummary(
        name=case["case"]["name"], baseline=None, pareto={"size_bytes_gzip": case["pareto"]},
        variants=[VariantResult(**{k: p[k] for k in ("name", "technique", "accuracy", "size_bytes_gzip")})
                  for p in case["points"]],
        sweet_spot=case["sweet_spot"], constraints={"max_size_kb": AIM["size_bytes_gzip"] / 1000,
                                                    "min_accuracy": AIM["accuracy"]},
        references=references)
    path.write_bytes(base64.b64decode(pareto_plot(summary, "size_bytes_gzip")))
    return path


def section(r: dict, doc: Path | None = None) -> list[str]:
    from bench.asha_replay import markdown as replay_markdown

    lines = ["## Frontier against the toolkit's recipe and the default CNN", ""]
    for c in r["cases"]:
        recipe, base = c["recipe"], c.get("default_cnn")
        lines += [f"### {c['case']['name']}: `{c['case']['spec']}` ({c['wall_seconds']:.0f} s) beside "
                  f"`tfmot_recipe.py` run {len(c['recipe_runs'])} time(s) on the same data", ""]
        if base:
            lines += [f"Default CNN (`{base['spec']}`, a train job in this bench run, {base['wall_seconds']:.0f} s): "
                      f"test accuracy {base['keras_accuracy']:.4f} (Keras) / {base['accuracy']:.4f} (float TFLite), "
                      f"{base['size_bytes_gzip']:,} B gzip. ×: its gzip size over the point's.", ""]
        lines += ["| point | technique | TFLite accuracy | gzip bytes | floor judged before training | × | p95 ms | |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        runs = ", ".join(f"{x['pruned_quant_tflite_acc']:.3f} at {x['gzip_pruned_quant_tflite']:,} B"
                         for x in c["recipe_runs"])

        def times(size: float) -> str:
            return f"{base['size_bytes_gzip'] / size:.1f}×" if base else "–"

        lines.append(f"| tfmot recipe (median) | prune 50→80 % + dynamic range | {recipe['accuracy']:.4f} | "
                     f"{recipe['size_bytes_gzip']:,.0f} | – | {times(recipe['size_bytes_gzip'])} | – | runs: {runs} |")
        for p in sorted(c["points"], key=lambda p: p["size_bytes_gzip"]):
            flags = [f for f, on in (("sweet spot", p["name"] == c["sweet_spot"]), ("Pareto", p["name"] in c["pareto"]),
                                     ("dominates the recipe", p["name"] in c["dominating"])) if on]
            floor = f"{p['size_floor']:,}" if p.get("size_floor") else "–"
            lines.append(f"| {p['name']} | {p['technique']} | {p['accuracy']:.4f} | {p['size_bytes_gzip']:,} | {floor} | "
                         f"{times(p['size_bytes_gzip'])} | {p['latency_ms_p95']:.3f} | {', '.join(flags)} |")
        lines.append("")
        lines += ["Literature anchors: " + "; ".join(f"{a['name']}: {a['accuracy']:.3f}" for a in LITERATURE)
                  + " (drawn by parameter count in a sweep's report.html).", ""]
        if doc is not None:
            chart = pareto_chart(c, doc.with_name(f"{doc.stem}_frontier_{c['case']['name']}.png"))
            lines += [f"![accuracy vs gzip size, {c['case']['name']}]({chart.name})", ""]
        saving = c.get("search_saving")
        if saving:
            skipped = ", ".join(f"`{n}`" for n in saving["skipped_too_large"]) or "none"
            lines += [f"The table is the exhaustive run's (`search.train_too_large: true`, every scale trained). "
                      f"As a user runs it, the sweep ({c['wall_seconds']:.0f} s) did not train {skipped}, whose "
                      f"files could not fit `max_size_kb`: {saving['epochs_used']} of "
                      f"{saving['epochs_exhaustive']} trial-epochs ({saving['epoch_fraction']:.0%}); its sweet spot "
                      f"`{saving['sweet_spot']}` scored {saving['accuracy'] or 0:.4f}, the exhaustive run's "
                      f"`{saving['exhaustive_sweet_spot']}` {saving['exhaustive_accuracy'] or 0:.4f}.", ""]
        if c.get("replay"):
            lines += ["Early stopping, replayed under real Tune on this sweep's recorded validation curves "
                      "(`bench/asha_replay.py`):", "", replay_markdown(c["replay"]), ""]
    return lines

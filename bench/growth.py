"""Growth: training time against data size, and sweep cost against the number of variants; least-squares lines.

* Training: train jobs of the benchmarks' float CNN (`common.cnn_train_document`)
  on 25 / 50 / 100 % class-balanced fractions of the train split
  (`data.train_fraction`; the bundled sample by default), in each worker layout:
  2 workers x 1 CPU (the benchmarks' jobs) and 1 worker x 2 CPUs (the
  quickstart's); time = the job's Ray Train run (`wall_seconds`), and separately
  the seconds inside `fit` (`train_seconds`). Line per layout: seconds = a + b x
  rows; its intercept a is the fixed cost of a Ray Train run, held to <= 15 s.
* Sweeps: `kind: sweep` jobs on the bundled sample with 1, 2 and 3 variants
  (1 scale x {float}, + int8, + float16), one trial at a time; time = the
  job's wall time. Line: seconds = a + b x variants (the marginal cost of a
  post-training variant: its trial, conversion and measurement).

A point that is the same job as one an earlier benchmark ran (in quick mode, the
compression baseline and the sweep benchmark's grid sweep) reuses that run.
"""

from __future__ import annotations

from bench import common

NAME = "growth"
# The bundled sample (5,400 train rows): on full data each Ray Train run first decodes all 60,000 rows
# (the fraction is selected after the decode), a fixed cost that would dwarf the fraction's share.
# Worker layouts as [workers, CPUs per worker]; the first is the benchmarks' jobs' (common.train_document).
# Each repetition trains every point once with its own seed (a repeated spec would reuse the first run).
DEFAULT = {"full_data": False, "fractions": [0.25, 0.5, 1.0], "epochs": 3, "layouts": [[2, 1], [1, 2]],
           "repetitions": 3, "sweep_epochs": 1,
           "sweep_points": [[[0.25], ["float"]], [[0.25], ["float", "int8"]], [[0.25], ["float", "int8", "float16"]]]}
# Quick: two training points (a line needs two) and one sweep (no sweep line), chosen to be the runs the
# compression (its 1-epoch baseline) and sweep (its grid) benchmarks make: only the 50 % point is new.
QUICK = {**DEFAULT, "fractions": [0.5, 1.0], "epochs": 1, "layouts": [[2, 1]], "repetitions": 1, "sweep_epochs": 2,
         "sweep_points": [[[0.25], ["float", "int8"]]]}
PIPELINES = {"float": [], "int8": [{"quantize": {"mode": "int8"}}], "float16": [{"quantize": {"mode": "float16"}}]}
FIXED_COST_TARGET_SECONDS = 15.0


def layout_name(workers: int, cpus_per_worker: int) -> str:
    return f"{workers}x{cpus_per_worker}"


def training_points(settings: dict, ctx: common.Context) -> list[dict]:
    storage = ctx.scratch / "growth"
    points = []
    for repetition in range(settings["repetitions"]):
        for workers, cpus_per_worker in settings["layouts"]:
            layout = layout_name(workers, cpus_per_worker)
            for fraction in settings["fractions"]:
                data = common.data_section(settings["full_data"], fraction)
                document = common.cnn_train_document(f"bench-growth-{layout}-{fraction:g}-r{repetition}", data,
                                                     settings["epochs"], storage)
                document["scaling"] = {"num_workers": workers, "cpus_per_worker": cpus_per_worker}
                document["train"]["seed"] = repetition
                common.log(f"growth: training on {fraction:.0%} of the train split, {workers} x {cpus_per_worker} "
                           f"CPU, repetition {repetition + 1}/{settings['repetitions']}")
                summary, _ = common.run_job(document, ctx)
                points.append({"layout": layout, "fraction": fraction, "repetition": repetition,
                               "train_rows": summary["train_rows"], "run_wall_seconds": summary["wall_seconds"],
                               "fit_seconds": summary["train_seconds"]})
    return points


def layout_label(layout: str) -> str:
    """A layout key as the doc writes it: "2x1" -> "2 × 1" (workers × CPUs each)."""
    return layout.replace("x", " × ")


def training_fits(training: list[dict]) -> dict:
    """Per worker layout: the Ray Train run's wall time and the time inside `fit`, each a line in the rows
    through every repetition's points."""
    fits = {}
    for layout in dict.fromkeys(p["layout"] for p in training):
        points = [p for p in training if p["layout"] == layout]
        rows = [p["train_rows"] for p in points]
        fits[layout] = {"run_wall_vs_rows": common.line_fit(rows, [p["run_wall_seconds"] for p in points]),
                        "fit_vs_rows": common.line_fit(rows, [p["fit_seconds"] for p in points])}
    return fits


def fixed_cost_targets(fits: dict) -> list[dict]:
    """The fixed cost of a Ray Train run (its wall line's intercept) against the target, per layout."""
    return [{"requirement": f"fixed cost of a Ray Train run, {layout_label(layout)} CPU "
                            f"≤ {FIXED_COST_TARGET_SECONDS:.0f} s",
             "figure": f"{fit['run_wall_vs_rows']['intercept']:.1f} s",
             "met": fit["run_wall_vs_rows"]["intercept"] <= FIXED_COST_TARGET_SECONDS}
            for layout, fit in fits.items()]


def sweep_points(settings: dict, ctx: common.Context) -> list[dict]:
    from bench.sweep import sweep_document

    points = []
    for index, (widths, pipelines) in enumerate(settings["sweep_points"]):
        overrides = [f"train.epochs={settings['sweep_epochs']}", "fine_tune.epochs=1", "tune.scheduler=fifo",
                     "tune.max_concurrent_trials=1", "evaluation.repetitions=50", "evaluation.memory=false",
                     "evaluation.batch_sizes=[256]", f"search.widths={widths}",
                     "search.pipelines=" + str([{"name": p, "pipeline": PIPELINES[p]} for p in pipelines])]
        document = sweep_document(f"bench-growth-sweep-{index}", ctx.scratch / "growth-sweeps", overrides)
        summary, wall = common.run_job(document, ctx)
        points.append({"widths": widths, "pipelines": pipelines, "variants": len(summary["variants"]),
                       "wall_seconds": wall})
    return points


def run(settings: dict, ctx: common.Context) -> dict:
    training = training_points(settings, ctx)
    sweeps = sweep_points(settings, ctx)
    fits = {"training": training_fits(training)}
    if len(sweeps) > 1:
        fits["sweep_wall_vs_variants"] = common.line_fit([p["variants"] for p in sweeps],
                                                         [p["wall_seconds"] for p in sweeps])
    return {"settings": settings, "training": training, "sweeps": sweeps, "fits": fits,
            "targets": fixed_cost_targets(fits["training"])}

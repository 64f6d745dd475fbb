"""docs/benchmarks.md (and its Pareto chart) from the bench/results/*.json files; prints nothing it did not read."""

from __future__ import annotations

import base64
from pathlib import Path

from bench import common, frontier
from bench.growth import layout_label
from cluster.results import ReferencePoint, SweepSummary, VariantResult
from cluster.tables import render as render_table


def _x(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}×"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _n(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _mark(met) -> str:
    return "–" if met is None else ("**met**" if met else "**missed**")


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table through the project's one renderer, as the doc's lines."""
    return render_table(header, [[str(c) for c in row] for row in rows], markdown=True).splitlines() + [""]


# ---------------------------------------------------------------- targets


def _scaling(comparison: dict) -> str:
    workers, cpus = comparison["workers"], comparison["cpus_per_worker"]
    return f"{workers} worker{'s' if workers > 1 else ''} × {cpus} CPU"


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number} {plural if number > 1 else singular}"


def _processes(workers: int) -> str:
    return _count(workers, "process", "processes")


def _threads(threads: int) -> str:
    return _count(threads, "thread", "threads")


def targets(results: dict) -> list[list]:
    rows = []
    pipeline = results.get("input_pipeline")
    if pipeline and "comparisons" in pipeline:
        for key, c in pipeline["comparisons"].items():
            # The tf.data rows are the baselines; the "before" row is not held to the target.
            if key.startswith("tfdata") or c.get("input") == "to_tf":
                continue
            rows.append([f"input pipeline: Ray ({_scaling(c)}) vs tf.data ≥ 1.0×",
                         _x(c["ratio_vs_tfdata"]), _mark(c["ratio_vs_tfdata"] is not None
                                                          and c["ratio_vs_tfdata"] >= 1.0)])
            like = c.get("ratio_vs_tfdata_same_layout")
            if like is not None:
                rows.append([f"input pipeline: Ray ({_scaling(c)}) vs tf.data in {_processes(c['workers'])} "
                             f"× {_threads(c['cpus_per_worker'])} under the same strategy ≥ 1.0× (like for like)",
                             _x(like), _mark(like >= 1.0)])
            wait = c["input_wait_fraction"]
            rows.append([f"input wait, Ray {_scaling(c)} < 5 % of step time",
                         _pct(wait), _mark(wait is not None and wait < 0.05)])
    hardware_result = results.get("hardware")
    if hardware_result and "models" in hardware_result:
        rows += hardware_targets(hardware_result)
    compression = results.get("compression")
    if compression and "targets" in compression:
        for target in compression["targets"]:
            rows.append([f"compression ({target['name']}): {target['requirement']}",
                         f"{target['figure'] or '–'}" + (f" (`{target['point']}`)" if target["point"] else ""),
                         _mark(target["met"])])
    for name in ("growth", "inference", "frontier"):
        result = results.get(name)
        for target in (result or {}).get("targets", []):
            rows.append([f"{name}: {target['requirement']}", target["figure"], _mark(target["met"])])
    return rows


# ---------------------------------------------------------------- sections


def input_pipeline(r: dict) -> list[str]:
    s = r["settings"]
    lines = ["## 1. Input pipeline: Ray Data → Ray Train against in-process tf.data", "",
             f"{r['train_rows']:,} train rows ({'full Fashion-MNIST' if s['full_data'] else 'bundled sample'}, "
             f"fraction {s['fraction']:g}), {s['model']['family']} width {s['model']['width']:g}, global batch "
             f"{s['batch']}. Each run alternates its epochs between real input and in-memory tensors "
             f"({', '.join(r['plan'])}); the first epoch of each kind is its warm-up, and a run's figure for a "
             f"kind is the median of its other {s['measured_epochs']} epoch(s). {s['repetitions']} run(s) per "
             "configuration in rotating order (each repetition runs every configuration once, starting one "
             "place later than the last); the table gives the median over runs, with the runs' range in "
             "brackets. The ranges are this machine's noise, not competition inside it: a lone run's worker holds a "
             "steady 1.0 CPU while its epochs of the same work vary in speed, because the work a CPU-second does "
             "varies with the virtual machine's host. One run's figure can be off by 2×; hence the repetitions.",
             "",
             "Same work on both sides: PNG decode once per row (Ray: PIL in a Ray Data map, kept in the object "
             "store, `data.cache: true`; tf.data: `tf.io.decode_png` + `.cache()`), then every epoch the same "
             "augmentation code, `cluster/data/augment.py: augment_images` (Ray: a streaming `map_batches` "
             "stage; tf.data: `tf.numpy_function` on each batch), with the same ops: "
             + ", ".join(f"`{op['op']}` (p={op['p']:g})" for op in r["augment"]) + ". "
             f"tf.data runs in one process with {r['tfdata_threads']} intra-op threads; a Ray Train worker has "
             "as many threads as CPUs, so 1 worker × 2 CPUs is the like-for-like row on 2 cores. Both sides "
             "compile Keras with the train spec's default `steps_per_execution` (steps per call into "
             "TensorFlow).", "",
             "Batches reach Keras through `cluster/training/loop.py: shard_batches` (a training epoch's Ray Data "
             f"blocks as numpy, whole, {r.get('prefetch_batches', 4)} fetched ahead; shuffled and cut into "
             "batches in tf.data, prefetched by tf.data), "
             "and the augmentation stage runs on batches of `cluster/data/pipeline.py: augment_batch_rows`"
             + (f" ({r['augment_batch_rows']:,} rows)" if r.get("augment_batch_rows") else "") + ". A "
             "row marked *`to_tf` (before)* is the path before both: the same loop on Ray's own "
             "`DataIterator.to_tf` (one batch fetched ahead, Ray's local shuffle buffer, no tf.data prefetch), "
             "its augmentation stage on Ray Data's default batches (one block each).", "",
             "Input wait: the same training on in-memory tensors of the same shape, in the same run (Ray: the "
             "project's `train_loop_per_worker`, its Ray Data shard replaced in those epochs by a `tf.data` of "
             "in-memory tensors in each worker; tf.data: the same model in the same process), so wait = 1 − step "
             "time in memory / step time real = 1 − real samples/s ÷ in-memory samples/s.", ""]
    spreads = r.get("spreads", {})

    def with_range(key: str) -> str:
        low, high = spreads.get(key, (None, None))
        return _n(r["medians"][key]) + (f" ({_n(low)}–{_n(high)})" if low is not None and low != high else "")

    rows = []
    for key, c in r["comparisons"].items():
        if key == "tfdata":
            label = "tf.data, in process"
        elif key.startswith("tfdata"):
            label = f"tf.data, {_processes(c['workers'])} × {_threads(c['threads'])}, MultiWorkerMirroredStrategy"
        else:
            label = f"Ray Data → Ray Train, {_scaling(c)}"
        if c.get("input") == "to_tf":
            label += ", Ray's `to_tf` (before)"
        rows.append([label, with_range(f"{key}_real"), with_range(f"{key}_in_memory"), _x(c["ratio_vs_tfdata"]),
                     _x(c.get("ratio_vs_tfdata_same_layout")), _pct(c["input_wait_fraction"])])
    return lines + _table(["path", "samples/s (real input)", "samples/s (in memory)", "ratio vs tf.data",
                           "vs tf.data, same layout", "input wait"], rows) + like_for_like_note(r)


def like_for_like_note(r: dict) -> list[str]:
    """What the tf.data rows in several processes are, when the run had any."""
    layouts = [c for key, c in r["comparisons"].items() if key.startswith("tfdata") and c.get("workers", 1) > 1]
    if not layouts:
        return []
    c = layouts[0]
    strategy_cost = c["ratio_vs_tfdata"]
    return [f"*tf.data, {_processes(c['workers'])}*: the tf.data side outside Ray in {c['workers']} processes of "
            f"{_threads(c['threads'])}, under MultiWorkerMirroredStrategy as Ray Train's workers are (each trains on its "
            "share of the rows with its part of the global batch, and they all-reduce the gradients every step): "
            "the like-for-like baseline of the Ray row with as many workers (*vs tf.data, same layout*). Its ratio "
            f"to tf.data in one process ({_x(strategy_cost)}) is what splitting the cores over processes under "
            "the strategy costs on this machine, with no Ray in it.", ""]


MFU_TARGET = 0.8  # CNN MFU on Ray Train against in process (issue 17)


def hardware_targets(r: dict) -> list[list]:
    cnn = r["models"].get("cnn", {})
    return [[f"MFU: cnn on Ray Train ({_scaling(run)}) ≥ {MFU_TARGET:g}× in-process MFU",
             f"{_x(run['mfu_vs_in_process'])} ({_pct(run['mfu'])} against {_pct(cnn['in_process_mfu'])})",
             _mark(run["mfu_vs_in_process"] is not None and run["mfu_vs_in_process"] >= MFU_TARGET)]
            for run in cnn.get("ray_train", {}).values()]


def hardware(r: dict) -> list[str]:
    peak, s = r["peak_flops"], r["settings"]
    lines = ["## 2. Hardware efficiency: model FLOPs utilisation of the CPU", "",
             f"Peak: float32 `tf.linalg.matmul`, n = {s['matmul_n']}, {r['threads']} threads, fastest "
             f"call: **{peak / 1e9:.1f} GFLOP/s** (median call {r['peak_flops_median_call'] / 1e9:.1f}). "
             "Achieved = 2 FLOP/MAC × MACs/sample (`cluster/evaluation/compute.py`) × 3 (forward + backward) × "
             "samples/s. In-process: Keras `fit` on in-memory tensors in the peak's process and threads, compiled "
             "with the train spec's default `steps_per_execution`, as the Ray Train path is. Ray Train: "
             f"the project's path with Ray Data input ({'full Fashion-MNIST' if s['ray_full_data'] else 'bundled sample'}"
             f", fraction {s['ray_fraction']:g}, {s['ray_epochs']} epochs, the median of the epochs after the first); "
             "1 worker × 2 CPUs has the in-process run's two threads in one process, 2 workers × 1 CPU splits "
             "them over two processes that all-reduce their gradients every step.", ""]
    rows = []
    for name, m in r["models"].items():
        rows.append([name, _n(m["params"]), _n(m["macs_per_sample"]), "in process", _n(m["in_process_sps"]),
                     f"{m['in_process_flops'] / 1e9:.2f}", _pct(m["in_process_mfu"]), "1.00×",
                     f"{m['step_ms_in_process']:.1f} / {1e3 * m['matmul_seconds_per_step_at_peak']:.2f}"])
        for run in m.get("ray_train", {}).values():
            rows.append([name, "", "", f"Ray Train, {_scaling(run)}", _n(run["samples_per_second"]),
                         _n(run["flops"] and run["flops"] / 1e9, 2), _pct(run["mfu"]), _x(run["mfu_vs_in_process"]),
                         _n(run["step_ms"], 1)])
    lines += _table(["model", "params", "MACs/sample", "where", "samples/s", "GFLOP/s", "MFU", "× in-process MFU",
                     "step ms: measured / at peak"], rows)
    shares = "; ".join(f"{name} {_pct(m['in_process_mfu'])} in process"
                       + "".join(f", {_pct(run['mfu'])} on Ray Train {_scaling(run)}"
                                 for run in m.get("ray_train", {}).values())
                       for name, m in r["models"].items())
    lines += [f"What limits it ({shares}): the MLP is three dense matrix products per step (batch × 784 × 256, "
              "…), the kind of work the peak was measured on, so it gets the larger share of the peak; what is "
              "left is the optimizer's element-wise updates, dropout and per-step Keras overhead. The CNN's arithmetic "
              "is convolutions with few channels (1 → 32, 32 → 64 on 28×28 and 14×14 maps): small GEMMs after "
              "im2col plus memory-bound pooling, ReLU and their gradients, which keep it well under the big "
              "matmul's rate. On Ray Train the workers share the cores with the Ray Data augmentation stage; "
              "with 2 workers × 1 CPU each has 1 thread (not the peak's 2) and all-reduces its gradients (ring) "
              "every step.", ""]
    return lines


def compression(r: dict, doc: Path) -> list[str]:
    base = next(p for p in r["points"] if p["name"] == r["baseline"])
    s = r["settings"]
    lines = ["## 3. Compression against the toolkit's recipe and published results", "",
             f"Float baseline: the default CNN trained {r['jobs']['baseline_epochs']} epochs by a `kind: train` "
             f"job ({'full Fashion-MNIST' if s['full_data'] else 'bundled sample'}; "
             f"{r['jobs'].get('baseline_source', 'trained in this bench run')}), measured in this run: TFLite accuracy "
             f"{base['accuracy']:.4f}, {base['size_bytes_gzip']:,} B gzip. Variants: one `kind: compress` job "
             f"({s['fine_tune_epochs']} fine-tuning epoch(s) per step); every figure measured on the TFLite file "
             "(accuracy over the whole test split in the interpreter, gzip level 9). Ratio = baseline gzip ÷ "
             "variant gzip; drop = baseline − variant accuracy in points.", ""]
    rows = [[p["name"], p["source"], p.get("technique", "–"), f"{p['accuracy']:.4f}",
             f"{p['accuracy_drop_pt']:+.2f}", _n(p["size_bytes_gzip"]), _x(p["size_ratio"], 1),
             "yes" if p["name"] in r["pareto"] else ""] for p in sorted(r["points"], key=lambda p: -p["size_bytes_gzip"])]
    anchor = r["anchor"]
    for key in ("dense", "pruned_quantized"):
        a = anchor[key]
        rows.append([a["name"], f"tfmot_recipe.py, median of {anchor['runs']} run(s) in this bench run", "–",
                     f"{a['accuracy']:.4f}", "–", _n(a["size_bytes_gzip"]), "–", ""])
    for lit in r["literature"]:
        drop = "–" if lit["accuracy_drop_pt"] is None else f"{lit['accuracy_drop_pt']:+.2f}"
        rows.append([lit["name"], f"literature ({lit['source']})", lit["technique"], "–", drop, "–",
                     _x(lit["size_ratio"], 0), ""])
    lines += _table(["point", "source", "technique", "accuracy", "drop (pt)", "gzip bytes", "size ratio",
                     "on our frontier"], rows)
    pq = anchor["pruned_quantized"]
    lines += [f"The recipe's own ratio (pruned + quantized vs its dense TFLite): {_x(pq['ratio_vs_its_dense'], 1)}; "
              "its runs: " + ", ".join(f"{a['pruned_quant_tflite_acc']:.4f} at {a['gzip_pruned_quant_tflite']:,} B"
                                       for a in r["anchor_runs"]) + ".", ""]
    chart = write_pareto(r, doc)
    lines += [f"![accuracy vs gzip size]({chart.name})", ""]
    return lines


def write_pareto(r: dict, doc: Path) -> Path:
    """Our points and frontier, the recipe's point and the frontier target's box, accuracy vs gzip size (log x)."""
    from cluster.reporting import pareto_plot

    chosen = r.get("sweet_spot") or {}
    recipe = ReferencePoint(name=f"tfmot recipe, pruned + quantized (median of {r['anchor']['runs']})",
                            **{k: r["anchor"]["pruned_quantized"][k] for k in ("accuracy", "size_bytes_gzip")})
    summary = SweepSummary(
        name="frontier", baseline=None, pareto={"size_bytes_gzip": r["pareto"]},
        variants=[VariantResult(name=p["name"], accuracy=p["accuracy"], size_bytes_gzip=p["size_bytes_gzip"])
                  for p in r["points"]],
        sweet_spot=chosen.get("name") if chosen.get("feasible") else None,
        constraints={"max_size_kb": 8.2, "min_accuracy": 0.91}, references=[recipe])
    path = doc.with_name(doc.stem + "_pareto.png")
    path.write_bytes(base64.b64decode(pareto_plot(summary, "size_bytes_gzip")))
    return path


def inference(r: dict) -> list[str]:
    s = r["settings"]
    if "sweet_spot" not in r:  # only the frontier's files were here
        return ["## 4. Inference: sweet spot against the float baseline", "",
                "The compression benchmark's files were gone; only the frontier's were timed."] + frontier_inference(r)
    how = ("the most accurate" if r.get("sweet_spot_feasible", True) else
           "no point met them, so the one that misses by least:")
    lines = ["## 4. Inference: sweet spot against the float baseline", "",
             f"Sweet spot: `{r['sweet_spot']}` (of our compression points, under 50 KB gzip and 1 ms p95, the "
             f"full-data sweep's constraints, {how}) against the float CNN baseline's TFLite file; both timed by "
             f"`measure_tflite_latency` in LiteRT, one process, alternating, {s['repetitions']} repetition(s) "
             f"(median), ≥ {s['batch_calls']} batch-1 calls each, at each thread count.", ""]
    # Runs before thread counts were a list hold one count's figures at the top level.
    by_threads = r.get("by_threads") or {str(s["num_threads"]): r}
    rows = []
    for threads, figures in by_threads.items():
        rows += [[f"{name}, {threads} thread(s)", f"{m['latency_ms_p50']:.3f}", f"{m['latency_ms_p95']:.3f}",
                  _n(m["throughput_sps"])] for name, m in figures["medians"].items()]
        ratios = figures["ratios"]
        rows.append([f"ratio at {threads} thread(s) (baseline ÷ sweet spot; throughput sweet ÷ base)",
                     _x(ratios["p50_latency_lower_by"]), _x(ratios["p95_latency_lower_by"]),
                     _x(ratios["throughput_higher_by"])])
    lines += _table(["artifact", "p50 ms (batch 1)", "p95 ms (batch 1)", f"samples/s (batch {s['throughput_batch']})"],
                    rows)
    return lines + frontier_inference(r)


def frontier_inference(r: dict) -> list[str]:
    s, lines = r["settings"], []
    frontier_run = r.get("frontier")
    if frontier_run:
        lines += ["", "### The full-data frontier's files against the default CNN's float file", "",
                  f"From the frontier benchmark run of {frontier_run['frontier_started']} (each file's gzip size "
                  "checked against that run's record), timed the same way: wall time per call from Python (set the "
                  "input, invoke, read the output). At tens of microseconds that call's own overhead is part of the "
                  "figure (both small files time alike, and a second thread helps them little), so the batch-256 "
                  "throughput is the runtime's own speed.", ""]
        rows = []
        for threads, figures in frontier_run["by_threads"].items():
            rows += [[f"{name}, {threads} thread(s)", f"{m['latency_ms_p50']:.4f}", f"{m['latency_ms_p95']:.4f}",
                      _n(m["throughput_sps"])] for name, m in figures["medians"].items()]
            for name, ratios in figures["ratios"].items():
                rows.append([f"ratio at {threads} thread(s): default CNN ÷ {name}", _x(ratios["p50_latency_lower_by"]),
                             _x(ratios["p95_latency_lower_by"]), _x(ratios["throughput_higher_by"])])
        lines += _table(["artifact", "p50 ms (batch 1)", "p95 ms (batch 1)",
                         f"samples/s (batch {s['throughput_batch']})"], rows)
    return lines


def sweep(r: dict) -> list[str]:
    g, a, s = r["grid"], r["asha"], r["settings"]
    lines = ["## 5. Sweep: parallel efficiency, ASHA against the full grid", "",
             f"`configs/quickstart.yaml` (bundled sample) with `{' '.join('--set ' + o for o in r['overrides'])}`: "
             f"{g['variants']} variants. Efficiency = Σ trial times (Tune's `time_total_s`) ÷ (slots × span of the "
             "two Tune experiments); also against the whole job's wall time (data checks, measuring every "
             "artifact in the driver are serial).", ""]
    lines += _table(["figure", "value"], [
        ["grid sweep wall time (job)", f"{g['wall_seconds']:.0f} s"],
        ["Σ trial times / Tune span", f"{g['trial_seconds_sum']:.0f} s / {g['tune_span_seconds']:.0f} s"],
        [f"speed-up over running the trials one by one ({g.get('slots', s['slots'])} slot(s) granted of "
         f"{s['slots']} asked)", _x(g["speedup_vs_serial_tune"])],
        ["parallel efficiency (Tune span / whole job)",
         f"{_pct(g['parallel_efficiency_tune'])} / {_pct(g['parallel_efficiency_job'])}"],
        ["sweet spot: grid / ASHA", f"{g['sweet_spot']} / {a['sweet_spot']} "
                                    f"({'same' if a['same_sweet_spot'] else 'different'})"],
        ["ASHA scale-trial epochs used / full grid",
         f"{a['scale_trial_epochs_used']} / {a['scale_trial_epochs_full_grid']} ({_pct(a['epoch_fraction'])})"],
        ["ASHA wall time / grid", f"{a['wall_seconds']:.0f} s / {g['wall_seconds']:.0f} s "
                                  f"({_x(a['wall_ratio_vs_grid'])})"]])
    return lines


def growth(r: dict) -> list[str]:
    fits = r["fits"]
    lines = ["## 6. Growth: training time against data size, sweep cost against variants", "",
             "Training: train jobs of the float CNN (w1 d2, the compression baseline's recipe), "
             f"{r['settings']['epochs']} epoch(s), on fractions of "
             f"the {'full Fashion-MNIST' if r['settings']['full_data'] else 'bundled sample'}'s train split, in each "
             "worker layout: 2 workers × 1 CPU (the benchmarks' jobs) and 1 worker × 2 CPUs (the quickstart's). "
             "Sweeps: `configs/quickstart.yaml` on the bundled sample, one trial at a time, "
             f"{r['settings']['sweep_epochs']} epoch(s). Least-squares lines over the points below.", ""]
    def figure(points: list[dict], key: str) -> str:
        values = sorted(p[key] for p in points)
        spread = f" ({values[0]:.1f}–{values[-1]:.1f})" if len(values) > 1 else ""
        return f"{common.median(values):.1f}{spread}"

    groups = {}
    for p in r["training"]:
        groups.setdefault((p["layout"], p["fraction"]), []).append(p)
    lines += _table(["layout (workers × CPUs)", "train fraction", "rows", "runs", "Ray Train run wall s",
                     "fit s"],
                    [[layout_label(layout), f"{fraction:.0%}", _n(points[0]["train_rows"]), len(points),
                      figure(points, "run_wall_seconds"), figure(points, "fit_seconds")]
                     for (layout, fraction), points in groups.items()])
    lines += ["Each cell: the median over the repetitions (each with its own seed), their range in brackets; "
              "the lines are fitted through every run.", ""]
    for layout, layout_fits in fits["training"].items():
        wall, fit = layout_fits["run_wall_vs_rows"], layout_fits["fit_vs_rows"]
        trend = "linear in the data" if fit["r2"] >= 0.95 else "not well described by a line"
        lines += [f"Training, {layout_label(layout)} CPU: wall ≈ {wall['intercept']:.1f} s + "
                  f"{1e3 * wall['slope']:.2f} s per 1,000 rows (R² {wall['r2']:.3f}); inside `fit` ≈ "
                  f"{fit['intercept']:.1f} s + {1e3 * fit['slope']:.2f} s per 1,000 rows (R² {fit['r2']:.3f}): "
                  f"time inside `fit` is {trend}.", ""]
    lines += ["The wall time's intercept is the fixed cost of a Ray Train run: starting the controller, the worker "
              "group and the strategy, tracing the first epoch, and decoding the whole source once "
              "(`data.train_fraction` selects rows after the decode), so a smaller fraction saves only the epochs' "
              "share.", ""]
    lines += _table(["sweep", "variants", "job wall s"],
                    [[f"widths {p['widths']} × {p['pipelines']}", p["variants"], f"{p['wall_seconds']:.0f}"]
                     for p in r["sweeps"]])
    if "sweep_wall_vs_variants" in fits:
        f = fits["sweep_wall_vs_variants"]
        lines += [f"Sweeps: wall ≈ {f['intercept']:.0f} s + {f['slope']:.0f} s per variant (R² {f['r2']:.3f}); "
                  "the slope is the marginal cost of one more post-training variant of a trained scale (its Tune "
                  "trial, conversion and measurement); a variant on a new scale adds a whole Ray Train run "
                  "(see the intercepts of the training lines above).", ""]
    return lines


SECTIONS = {"input_pipeline": input_pipeline, "hardware": hardware, "inference": inference, "sweep": sweep,
            "growth": growth, "frontier": frontier.section}


# The document's section order (its numbering), not the order the benchmarks run in.
DOC_ORDER = ("input_pipeline", "hardware", "compression", "inference", "sweep", "growth", "frontier")


def render(results_dir: Path, doc: Path, quick: bool = False) -> None:
    results = {name: common.read_result(results_dir, name) for name in DOC_ORDER}
    results = {k: v for k, v in results.items() if v}
    title = "# Benchmarks" + (" (QUICK smoke run: tiny data, 1 repetition, 0.1 s timings; not the real figures)"
                              if quick else "")
    out = [title, "",
           "Generated by `python -m bench` (`make bench`) from `bench/results/*.json`, which hold every "
           "repetition's raw numbers; each comparison below was measured side by side in the same bench run. "
           "A job that computes what an earlier benchmark's job computed (the same spec under another name) runs "
           "once and both use it. `python -m bench --quick` is the smoke run (`tests/test_bench_quick.py`): 136 s "
           "alone on 2 idle cores (2026-12-04 15:33; 154 s right after with its jobs timing each artifact 1 s, "
           "not 0.1 s), 147-265 s in the suite.", ""]
    if not results:
        import importlib

        modules = [importlib.import_module(f"bench.{name}") for name in common.BENCHMARKS]
        out += ["No results yet: run `python -m bench` (default settings, under 45 min on 2 cores), "
                "`python -m bench --quick` (smoke run, results in `bench/results/quick/`) or "
                "`python -m bench --only NAME[,NAME]`. The benchmarks:", ""]
        out += [f"- `bench/{name}.py`: {module.__doc__.strip().splitlines()[0]}" for name, module in
                zip(common.BENCHMARKS, modules)]
        doc.write_text("\n".join(out + [""]))
        return
    first = next(iter(results.values()))
    m = first["machine"]
    out += ["## Machine and versions", ""]
    out += _table(["figure", "value"], [
        ["CPU", f"{m['cpu']} ({m['logical_cpus']} logical CPUs, {m['cpus_available']} available)"],
        ["memory", f"{(m.get('memory_bytes') or 0) / 2**30:.1f} GiB"],
        ["Ray cluster", f"{m.get('ray_cluster_cpus', '–')} CPUs on {m.get('ray_nodes', '–')} node(s)"],
        ["OS / Python", f"{m['os']} / {m['python']}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in first["versions"].items() if v)]])
    out += ["## Wall time of each benchmark", ""]
    out += _table(["benchmark", "started", "wall time", "status"],
                  [[name, r["started"], f"{r['wall_seconds']:.0f} s", "error: " + r["error"] if r.get("error") else "ok"]
                   for name, r in results.items()] +
                  [["total", "", f"{sum(r['wall_seconds'] for r in results.values()):.0f} s", ""]])
    out += ["## Targets", ""] + _table(["target", "figure", "result"], targets(results))
    for name, r in results.items():
        if r.get("error"):
            continue
        out += compression(r, doc) if name in ("compression",) else (
            frontier.section(r, doc) if name == "frontier" else SECTIONS[name](r))
        if name == "sweep":
            from bench.asha_replay import section

            heading = "### On full Fashion-MNIST: `configs/sweep_full.yaml`, ASHA replayed on the grid's learning curves"
            out += section(results_dir / "asha_replay.json", heading)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(out))

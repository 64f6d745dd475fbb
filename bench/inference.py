"""Inference: compressed artifacts against their float baseline, same runtime, same threads.

Two comparisons, each timed with `cluster/evaluation/latency.py:measure_tflite_latency`
(batch-1 p50/p95 and batch-256 throughput) in LiteRT at each thread count of
`num_threads` (1 and 2: a phone's one big core, and two), in this one process,
alternating baseline and candidates `repetitions` times; the figures are the
medians of the repetitions, and the targets are read at the first thread count.

* compression: the TFLite files the compression benchmark produced in this bench
  run (`compression.json`): the float CNN baseline, and the sweet spot of its
  compressed variants under the full-data sweep's constraints.
* frontier: the full-data frontier run's files (`frontier.json`, run before this
  one): the default CNN's float file against the sweep's sweet spot and against
  the smallest point within 0.5 pt of the default CNN's accuracy. Each file's
  gzip size must equal the one that run recorded, or the comparison is skipped.
"""

from __future__ import annotations

from bench import common

NAME = "inference"
DEFAULT = {"repetitions": 5, "num_threads": [1, 2], "batch_calls": 300, "throughput_batch": 256}
QUICK = {"repetitions": 1, "num_threads": [1, 2], "batch_calls": 100, "throughput_batch": 256}


def run(settings: dict, ctx: common.Context) -> dict:
    compressed = compression_comparison(settings, ctx)
    frontier = frontier_comparison(settings, ctx)
    if not compressed and not frontier:
        raise RuntimeError("inference needs the compression or the frontier benchmark's artifacts: run one first "
                           "(python -m bench --only compression,inference)")
    threads, targets = settings["num_threads"][0], []

    def p50_target(requirement: str, ratios: dict) -> dict:
        lower = ratios["p50_latency_lower_by"]
        return {"name": "p50", "requirement": requirement, "met": lower >= 3.0,
                "figure": f"{lower:.2f}× lower p50 at {threads} thread(s)"}

    if compressed:
        targets.append(p50_target("compression: ≥ 3× lower p50 latency than its float baseline", compressed["ratios"]))
    for name, ratios in (frontier["ratios"] if frontier else {}).items():
        targets.append(p50_target(f"frontier: {name} ≥ 3× lower p50 latency than the default CNN's float file", ratios))
    return {"settings": settings, **(compressed or {}), "frontier": frontier, "targets": targets}


def compression_comparison(settings: dict, ctx: common.Context) -> dict | None:
    """The compression benchmark's baseline and sweet spot, timed alternately; None when its files are gone."""
    from pathlib import Path

    compression = common.read_result(ctx.results, "compression")
    if not compression or not compression.get("sweet_spot"):
        return None
    artifacts = {"baseline": compression["baseline_artifact"], "sweet_spot": compression["sweet_spot"]["artifact"]}
    missing = [path for path in artifacts.values() if not Path(path).exists()]
    if missing:
        common.log(f"inference: {missing[0]} is gone (run the compression benchmark again); comparison skipped")
        return None
    by_threads = {threads: measure_at(artifacts, threads, settings) for threads in settings["num_threads"]}
    first = by_threads[settings["num_threads"][0]]
    return {"artifacts": artifacts, "sweet_spot": compression["sweet_spot"]["name"],
            "sweet_spot_feasible": compression["sweet_spot"].get("feasible"),
            "by_threads": {str(threads): figures for threads, figures in by_threads.items()},
            "runs": first["runs"], "medians": first["medians"], "ratios": first["ratios"]}


def frontier_comparison(settings: dict, ctx: common.Context) -> dict | None:
    """The full-data frontier run's files, timed alternately; None when that run or its files are not here."""
    from cluster.evaluation.files import gzip_size_bytes
    from bench.frontier import deployed_files

    result = common.read_result(ctx.results, "frontier")
    case = next((c for c in (result or {}).get("cases", []) if c.get("default_cnn")), None)
    if case is None:
        return None
    try:
        files = deployed_files(case, ctx)
    except (OSError, StopIteration, KeyError) as error:
        common.log(f"inference: the frontier run's files are not all here ({error}); frontier comparison skipped")
        return None
    for name, file in files.items():
        if not file["path"].exists() or gzip_size_bytes(file["path"]) != file["size_bytes_gzip"]:
            common.log(f"inference: {file['path']} is not the file the frontier run measured for {name}; skipped")
            return None
    artifacts = {name: str(file["path"]) for name, file in files.items()}
    baseline = next(iter(artifacts))
    by_threads = {threads: measure_at(artifacts, threads, settings, baseline=baseline)
                  for threads in settings["num_threads"]}
    first = by_threads[settings["num_threads"][0]]
    return {"frontier_started": result["started"], "baseline": baseline, "artifacts": artifacts,
            "by_threads": {str(threads): figures for threads, figures in by_threads.items()},
            "ratios": first["ratios"]}


def measure_at(artifacts: dict, threads: int, settings: dict, baseline: str = "baseline") -> dict:
    """Every artifact timed alternately at `threads` threads: runs, medians, and each one's ratios against
    `baseline` (the compression pair: `ratios` is the sweet spot's, keyed as before)."""
    from cluster.evaluation.latency import measure_tflite_latency

    runs = {name: [] for name in artifacts}
    for rep in range(settings["repetitions"]):
        common.log(f"inference: {threads} thread(s), repetition {rep + 1}/{settings['repetitions']}")
        for name, path in artifacts.items():
            result = measure_tflite_latency(path, num_threads=threads, batch_sizes=(settings["throughput_batch"],),
                                            repetitions=settings["batch_calls"])
            runs[name].append({"latency_ms_p50": result.latency_ms_p50, "latency_ms_p95": result.latency_ms_p95,
                               "throughput_sps": result.throughput_sps[settings["throughput_batch"]]})
    medians = {name: {key: common.median(r[key] for r in values) for key in values[0]}
               for name, values in runs.items()}
    base = medians[baseline]

    def ratios(best: dict) -> dict:
        return {"p50_latency_lower_by": base["latency_ms_p50"] / best["latency_ms_p50"],
                "p95_latency_lower_by": base["latency_ms_p95"] / best["latency_ms_p95"],
                "throughput_higher_by": best["throughput_sps"] / base["throughput_sps"]}
    others = {name: ratios(m) for name, m in medians.items() if name != baseline}
    return {"runs": runs, "medians": medians,
            "ratios": others["sweet_spot"] if baseline == "baseline" else others}

"""Inference: the sweet-spot artifact against the float baseline, same runtime, same threads.

Both are the TFLite files the compression benchmark produced in this bench run
(`compression.json`: the float CNN baseline, and the sweet spot chosen under
the full-data sweep's constraints). Each is timed with
`cluster/evaluation/latency.py:measure_tflite_latency` (batch-1 p50/p95 and
batch-256 throughput) in LiteRT at each thread count of `num_threads` (1 and
2: a phone's one big core, and two), in this one process, alternating baseline
and sweet spot `repetitions` times; the figures are the medians of the
repetitions. The target is read at the first thread count.
"""

from __future__ import annotations

from bench import common

NAME = "inference"
DEFAULT = {"repetitions": 5, "num_threads": [1, 2], "batch_calls": 300, "throughput_batch": 256}
QUICK = {"repetitions": 1, "num_threads": [1, 2], "batch_calls": 100, "throughput_batch": 256}


def run(settings: dict, ctx: common.Context) -> dict:
    from pathlib import Path

    compression = common.read_result(ctx.results, "compression")
    if not compression or not compression.get("sweet_spot"):
        raise RuntimeError("inference needs the compression benchmark's artifacts: run it first "
                           "(python -m bench --only compression,inference)")
    artifacts = {"baseline": compression["baseline_artifact"], "sweet_spot": compression["sweet_spot"]["artifact"]}
    for path in artifacts.values():
        if not Path(path).exists():
            raise RuntimeError(f"{path} is gone; run the compression benchmark again")
    by_threads = {threads: measure_at(artifacts, threads, settings) for threads in settings["num_threads"]}
    first = by_threads[settings["num_threads"][0]]
    speedup = first["ratios"]["p50_latency_lower_by"]
    return {"settings": settings, "artifacts": artifacts, "sweet_spot": compression["sweet_spot"]["name"],
            "sweet_spot_feasible": compression["sweet_spot"].get("feasible"),
            "by_threads": {str(threads): figures for threads, figures in by_threads.items()},
            "runs": first["runs"], "medians": first["medians"], "ratios": first["ratios"],
            "targets": [{"name": "p50", "requirement": "≥ 3× lower p50 latency", "met": speedup >= 3.0,
                         "figure": f"{speedup:.2f}× lower p50 at {settings['num_threads'][0]} thread(s)"}]}


def measure_at(artifacts: dict, threads: int, settings: dict) -> dict:
    """Both artifacts timed alternately at `threads` threads: runs, medians and ratios."""
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
    base, best = medians["baseline"], medians["sweet_spot"]
    return {"runs": runs, "medians": medians,
            "ratios": {"p50_latency_lower_by": base["latency_ms_p50"] / best["latency_ms_p50"],
                       "p95_latency_lower_by": base["latency_ms_p95"] / best["latency_ms_p95"],
                       "throughput_higher_by": best["throughput_sps"] / base["throughput_sps"]}}

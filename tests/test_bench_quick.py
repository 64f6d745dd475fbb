"""Smoke test of the benchmark harness: `python -m bench --quick` runs every benchmark end to end.

Not a performance check: it only asserts that each benchmark wrote its JSON file
with real (positive, finite) numbers and that the Markdown report was rendered.
About 5 minutes on 2 idle cores (283 s on 2026-12-02; 280-378 s before): the input pipeline alternates real and
in-memory epochs in one run, and the growth and frontier benchmarks reuse the compression and sweep
benchmarks' jobs (bench.common.run_job).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("input_pipeline", "hardware", "compression", "inference", "sweep", "growth", "frontier")
RECIPE = ROOT.parent / "shared" / "anchors" / "tfmot_recipe.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.timeout(1500)
@pytest.mark.skipif(not RECIPE.exists(), reason=f"the benchmarks run the toolkit's recipe beside ours: {RECIPE} "
                                                "ships only in the team's workspace")
def test_quick_bench_writes_results_and_doc(ray_cluster, tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path / "results"),
                           "--scratch", str(tmp_path / "scratch")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1400)
    assert done.returncode == 0, done.stderr[-4000:]
    results = {name: json.loads((tmp_path / "results" / f"{name}.json").read_text()) for name in BENCHMARKS}
    for name, result in results.items():
        assert result["quick"] is True and "error" not in result, (name, result.get("error"))
        assert positive(result["wall_seconds"]) and result["versions"]["ray"] and result["machine"]["logical_cpus"]
    pipeline = results["input_pipeline"]
    assert pipeline["plan"] == ["real", "in_memory", "real", "in_memory"]
    assert all(positive(c["samples_per_second"]) for c in pipeline["comparisons"].values())
    # Each kind's figure is its epoch after the warm-up, in the one run that had both kinds.
    for (run,) in pipeline["runs"].values():
        assert len(run["per_epoch_sps"]) == 2 and run["samples_per_second"] == run["per_epoch_sps"][1]
    assert all(positive(m["in_process_mfu"]) for m in results["hardware"]["models"].values())
    compression = results["compression"]
    assert len(compression["points"]) >= 2 and positive(compression["anchor"]["pruned_quantized"]["accuracy"])
    assert {t["name"] for t in compression["targets"]} == {"must", "aim", "frontier"}
    assert positive(results["inference"]["ratios"]["p50_latency_lower_by"])
    assert positive(results["sweep"]["grid"]["parallel_efficiency_tune"])
    assert 0 < results["sweep"]["asha"]["epoch_fraction"] <= 1
    growth = results["growth"]
    assert all(positive(p["run_wall_seconds"]) and positive(p["fit_seconds"]) for p in growth["training"])
    # One quick epoch is mostly tracing, so the slope's sign is noise here; the line must still be a number.
    (layout,) = growth["fits"]["training"]
    assert all(math.isfinite(fit["slope"]) for fit in growth["fits"]["training"][layout].values())
    assert [t["met"] in (True, False) for t in growth["targets"]] == [True]
    (sample,) = results["frontier"]["cases"]
    assert positive(sample["wall_seconds"]) and positive(sample["recipe"]["accuracy"])
    assert {p["name"] for p in sample["points"]} == {"bncnn-w0.25-d3-float", "bncnn-w0.25-d3-int8"}
    assert [t["met"] in (True, False) for t in results["frontier"]["targets"]] == [True, True]
    doc = (tmp_path / "results" / "benchmarks.md").read_text()
    assert "QUICK" in doc and "## Targets" in doc and "## 6. Growth" in doc
    assert "## Frontier against the toolkit's recipe" in doc
    assert (tmp_path / "results" / "benchmarks_pareto.png").stat().st_size > 1000


def test_the_quick_frontier_case_is_the_quick_sweep_grid_job_so_the_smoke_run_trains_it_once(tmp_path):
    from bench import common, frontier, sweep

    ctx = common.Context(quick=True, results=tmp_path / "results", scratch=tmp_path / "scratch")
    (case,) = frontier.QUICK["cases"]
    ours = frontier.job_document(case["spec"], "frontier-sample", case["full_data"], case["overrides"], ctx)
    grid = sweep.sweep_document("bench-sweep-grid-0", tmp_path / "runs",
                                sweep.grid_overrides(sweep.QUICK), sweep.QUICK["pipelines"])
    assert common.job_key(ours) == common.job_key(grid)
    # A change that makes them differ is caught, not silently run twice.
    grid["train"]["epochs"] += 1
    assert common.job_key(ours) != common.job_key(grid)

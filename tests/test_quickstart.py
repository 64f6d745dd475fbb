"""The README's main job, as a user runs it: its frontier must beat the toolkit's own recipe on the same data.

`sweetspot quickstart` sends configs/quickstart.yaml with `ray job submit`; the
toolkit's pruning tutorial (../shared/anchors/tfmot_recipe.py, unchanged) runs
3 times on the same bundled sample. Some variant of the sweep must be no larger
than the recipe's median file and at least as accurate as its median.
"""

from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import statistics
import subprocess
import sys

import pytest

from cluster.training.variants import FINE_TUNING_RUN
from tests.conftest import ROOT, SAMPLE, sweetspot

RECIPE = ROOT.parent / "shared" / "anchors" / "tfmot_recipe.py"
RECIPE_RUNS = 3


def run_recipe(runs: int) -> list[dict]:
    outputs = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, str(RECIPE), str(SAMPLE)], capture_output=True, text=True,
                              timeout=600, check=True)
        outputs.append(json.loads(done.stdout[done.stdout.index("{"):]))
    return outputs


@pytest.fixture(scope="module")
def recipe_runs():
    """The recipe's runs, started before the quickstart and run beside it: its job leaves about half of
    2 cores idle (Ray actor starts, imports, waits), which the recipe's TensorFlow process uses."""
    if not RECIPE.exists():
        yield None
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(run_recipe, RECIPE_RUNS)


@pytest.fixture(scope="module")
def quickstart(ray_cluster, recipe_runs, tmp_path_factory):
    storage = tmp_path_factory.mktemp("quickstart")
    done = sweetspot("quickstart", "--output", storage, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((storage / "quickstart" / "summary.json").read_text()), done


@pytest.fixture(scope="module")
def recipe(recipe_runs):
    if recipe_runs is None:
        pytest.skip(f"{RECIPE} is absent (it ships beside the project only in the team's workspace)")
    runs = recipe_runs.result(timeout=1800)
    return {"accuracy": statistics.median(r["pruned_quant_tflite_acc"] for r in runs),
            "size_bytes_gzip": statistics.median(r["gzip_pruned_quant_tflite"] for r in runs)}


@pytest.mark.timeout(1800)
def test_quickstart_frontier_dominates_the_toolkit_recipe(quickstart, recipe):
    summary, _ = quickstart
    dominating = [v["name"] for v in summary["variants"]
                  if v["size_bytes_gzip"] <= recipe["size_bytes_gzip"] and v["accuracy"] >= recipe["accuracy"]]
    assert dominating, (recipe, [(v["name"], v["accuracy"], v["size_bytes_gzip"]) for v in summary["variants"]])
    # The sweet spot is chosen under max_size_kb: 19, below the recipe's file, so it is one of them.
    assert summary["sweet_spot"] in dominating


@pytest.mark.timeout(1800)
def test_a_scale_whose_files_cannot_fit_is_never_trained_and_every_file_is_above_its_floor(quickstart):
    summary, done = quickstart
    assert summary["skipped_too_large"] == ["bncnn-w1-d3"]
    assert "bncnn-w1-d3: not trained" in done.stdout
    assert set(summary["scale_trial_epochs"]) == {"bncnn-w0.25-d3", "bncnn-w0.5-d3"}
    assert summary["scale_trial_epochs_used"] * 3 == summary["scale_trial_epochs_full_grid"] * 2
    assert not any(v["name"].startswith("bncnn-w1-") for v in summary["variants"])
    # The floors judged before training hold for the files training made.
    for variant in summary["variants"]:
        assert variant["size_bytes_gzip"] >= summary["size_floors"][variant["name"]], variant["name"]


@pytest.mark.timeout(1800)
def test_quickstart_prints_the_sweet_spot(quickstart):
    summary, done = quickstart
    assert summary["sweet_spot"] and summary["sweet_spot"] in done.stdout


def test_quickstart_console_is_short_and_ends_with_the_verdict(quickstart):
    """The job's progress lines and the result, not Ray's, Ray Data's and Tune's output."""
    summary, done = quickstart
    printed = done.stdout.splitlines()
    console = printed + done.stderr.splitlines()  # stderr: the admission note before the job starts
    assert len(console) <= 100, "\n".join(console)
    assert not any("Traceback" in line for line in console), "\n".join(console)
    assert sum("training " in line for line in printed) == 2  # one line per scale trial start ...
    assert sum("trained " in line for line in printed) == 2  # ... and end
    # The last lines: the table, the verdict naming the sweet spot, the report.
    assert printed[-1].startswith("report: ")
    names = tuple(variant["name"] for variant in summary["variants"])
    table_end = max(i for i, line in enumerate(printed) if line.startswith(names))  # the table's last row
    assert " ".join(printed[table_end + 1:]).startswith(f"Sweet spot: `{summary['sweet_spot']}`")
    storage = Path(done.args[done.args.index("--output") + 1])
    assert "Started training worker group" in (storage / "quickstart" / "job.log").read_text()  # the full log


def test_the_fine_tuned_variants_of_both_scales_share_one_ray_train_run(quickstart):
    """Both pruned variants (one per trained scale) fit in one trial's one worker group, in turn."""
    summary, done = quickstart
    run = Path(done.args[done.args.index("--output") + 1]) / "quickstart"
    pruned = sorted(v["name"] for v in summary["variants"] if "prune" in v["technique"])
    assert pruned == ["bncnn-w0.25-d3-pruned50-int8", "bncnn-w0.5-d3-pruned50-int8"]
    assert [p.parent.name for p in (run / "trials").glob(f"*/{FINE_TUNING_RUN}")] == [pruned[0]]
    for name in pruned:  # each variant's fitted step is its own record
        assert (run / "trials" / name / "step1-prune" / "meta.json").is_file()
    assert f"building {', '.join(pruned)} (fine-tuned in turn in one Ray Train run)" in done.stdout


def test_results_table_of_the_quickstart_is_narrow_and_names_the_sweet_spot(quickstart):
    summary, done = quickstart
    storage = done.args[done.args.index("--output") + 1]
    table = sweetspot("results", "quickstart", "--storage", storage)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120, table.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    assert lines[header].split()[:3] == ["variant", "technique", "accuracy"]
    rows = {line.split()[0]: line for line in lines[header + 2:header + 2 + len(summary["variants"])]}
    assert set(rows) == {v["name"] for v in summary["variants"]}
    assert "sweet spot" in rows[summary["sweet_spot"]]
    best = next(v for v in summary["variants"] if v["name"] == summary["sweet_spot"])
    assert f"{best['accuracy']:.4f}" in rows[summary["sweet_spot"]]
    wide = sweetspot("results", "quickstart", "--storage", storage, "--wide")
    assert "MACs" in wide.stdout and "peak RSS MB" in wide.stdout
    assert json.loads(sweetspot("results", "quickstart", "--storage", storage, "--json").stdout) == summary

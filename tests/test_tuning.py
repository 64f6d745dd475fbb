"""Sweep logic: Pareto frontiers, constraints and the sweet spot, the CPU budget, the search space."""

import itertools
import random

import pytest

from cluster.spec import ScalingSpec, SearchSpace, TuneSpec
from cluster.training.resources import Capacity, ResourceError
from cluster.tuning.budget import plan_concurrency
from cluster.tuning.pareto import choose, dominates, pareto_front, violations
from cluster.tuning.space import expand


def row(name, accuracy, size, latency=1.0, params=1000, flops=10_000):
    return {"name": name, "accuracy": accuracy, "size_bytes_gzip": size, "latency_ms_p95": latency,
            "params": params, "flops": flops}


ROWS = [row("big", 0.93, 400_000, 0.9), row("int8", 0.928, 100_000, 0.3), row("pruned", 0.92, 150_000, 0.8),
        row("tiny", 0.88, 7_000, 0.1), row("bad", 0.85, 200_000, 1.5)]


def test_front_holds_exactly_the_undominated():
    front = pareto_front(ROWS, "size_bytes_gzip")
    assert front == ["tiny", "int8", "big"]
    for r in ROWS:
        dominated = any(dominates(o, r, "size_bytes_gzip") for o in ROWS if o is not r)
        assert (r["name"] in front) == (not dominated)


def test_front_property_on_random_points():
    rng = random.Random(0)
    for _ in range(50):
        rows = [row(f"v{i}", rng.random(), rng.randint(1, 100)) for i in range(12)]
        front = set(pareto_front(rows, "size_bytes_gzip"))
        for a, b in itertools.permutations(rows, 2):
            if a["name"] in front and b["name"] in front:
                assert not dominates(a, b, "size_bytes_gzip")
        for r in rows:
            if r["name"] not in front:
                assert any(dominates(o, r, "size_bytes_gzip") for o in rows if o["name"] in front)


def test_sweet_spot_is_the_most_accurate_feasible():
    choice = choose(ROWS, {"max_size_kb": 160, "max_latency_ms_p95": 1.0})
    assert choice.sweet_spot == "int8" and set(choice.feasible) == {"int8", "pruned", "tiny"}
    assert not violations(next(r for r in ROWS if r["name"] == choice.sweet_spot),
                          {"max_size_kb": 160, "max_latency_ms_p95": 1.0})


def test_objective_size_picks_the_smallest_feasible():
    assert choose(ROWS, {"min_accuracy": 0.9}, "size_bytes_gzip").sweet_spot == "int8"


def test_impossible_constraints_name_the_closest():
    choice = choose(ROWS, {"max_size_kb": 8.0, "min_accuracy": 0.92})
    assert choice.sweet_spot is None and choice.closest == "tiny"
    assert set(choice.closest_violations) == {"min_accuracy"}
    assert choice.closest_violations["min_accuracy"] == pytest.approx((0.92 - 0.88) / 0.92)


def test_budget_lowers_concurrency_that_would_starve_the_data_stage():
    scaling = ScalingSpec(num_workers=1, cpus_per_worker=1, data_cpus=1)
    budget = plan_concurrency(scaling, TuneSpec(max_concurrent_trials=2, trial_driver_cpus=1.0),
                              Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0))
    # 2 trials x (1 driver + 1 worker + 1 data) = 6 > 4: only one fits.
    assert budget.concurrency == 1 and "lowered" in budget.explanation and "= 3 CPUs" in budget.explanation
    budget = plan_concurrency(scaling, TuneSpec(max_concurrent_trials=2, trial_driver_cpus=0.1),
                              Capacity(cpus=4.2, gpus=0, node_cpus=4.2, node_gpus=0))
    assert budget.concurrency == 2


def test_budget_refuses_what_never_fits():
    with pytest.raises(ResourceError, match=r"2 workers x 2 CPU = 4 \+ data_cpus 1 \+ driver 0.1 = 5.1 CPUs"):
        plan_concurrency(ScalingSpec(num_workers=2, cpus_per_worker=2), TuneSpec(),
                         Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0))
    with pytest.raises(ResourceError, match="gpus_per_worker=1 but the largest node has 0 GPUs"):
        plan_concurrency(ScalingSpec(num_workers=1, use_gpu=True, gpus_per_worker=1), TuneSpec(),
                         Capacity(cpus=8, gpus=0, node_cpus=8, node_gpus=0))


def test_space_is_scales_times_pipelines_with_every_float_model():
    search = SearchSpace(widths=[0.25, 0.5], depths=[1, 2], pipelines=[
        {"name": "float", "pipeline": []}, {"name": "int8", "pipeline": [{"quantize": {"mode": "int8"}}]},
        {"name": "p80", "pipeline": [{"prune": {"final_sparsity": 0.8}}]}])
    scales, variants = expand(search, seed=0)
    assert len(scales) == 4 and len(variants) == 4 + 4 * 2
    assert len({v.name for v in variants}) == len(variants)
    sampled = expand(search.model_copy(update={"sample": 3}), seed=0)[1]
    assert len(sampled) == 4 + 3 and sampled == expand(search.model_copy(update={"sample": 3}), seed=0)[1]


def test_constraints_unreachable_by_construction_are_refused():
    from cluster.spec import Constraints
    from cluster.tuning.space import UnreachableConstraint, check_reachable

    search = SearchSpace(widths=[0.25, 0.5], depths=[2])
    scales, variants = expand(search, seed=0)
    check_reachable(Constraints(max_params=200_000), scales, variants, (28, 28, 1), 10)
    with pytest.raises(UnreachableConstraint, match=r"constraints.max_params=100 but the smallest model .* params"):
        check_reachable(Constraints(max_params=100), scales, variants, (28, 28, 1), 10)
    with pytest.raises(UnreachableConstraint, match=r"constraints.max_flops=10"):
        check_reachable(Constraints(max_flops=10), scales, variants, (28, 28, 1), 10)


def test_asha_margin_is_one_standard_error_of_the_validation_accuracy():
    from cluster.tuning.asha import NoiseAwareASHA, accuracy_standard_error

    assert accuracy_standard_error(0.82, 6000) == pytest.approx(0.00496, abs=1e-5)
    scheduler = NoiseAwareASHA(6000, metric="val_accuracy", mode="max", time_attr="epoch", max_t=6,
                               grace_period=2, reduction_factor=3)
    bracket = scheduler._brackets[0]
    # The full sweep's epoch-2 cut: 0.8182 against 0.8185 is inside the noise, 0.80 is not.
    cutoff = bracket.cutoff({"a": 0.8185})
    assert cutoff == pytest.approx(0.8185 - accuracy_standard_error(0.8185, 6000))
    assert 0.80 < cutoff < 0.8182
    assert bracket.cutoff({}) is None
    with pytest.raises(ValueError, match="maximised"):
        NoiseAwareASHA(6000, metric="val_loss", mode="min", time_attr="epoch", max_t=6)


# Validation accuracy of the middle scale (bigger than the smallest, 0.80) and the epochs ASHA lets it train.
# 0.75 is 5 pt worse: cut at the first rung. 0.795 is 0.5 pt worse, inside the 1.6 pt standard error of
# 600 validation rows: trained fully.
@pytest.mark.parametrize("middle, middle_epochs", [(0.75, 1), (0.795, 4)])
@pytest.mark.timeout(300)
def test_asha_cuts_a_larger_scale_that_does_clearly_worse_and_never_a_smaller_one(ray_client, tmp_path, middle,
                                                                                  middle_epochs):
    """Real Tune and ASHA over scripted trials (the training is not what is under test, the order and cut are)."""
    from ray import tune

    from cluster.spec import SweepJob
    from cluster.tuning.space import Scale
    from cluster.tuning.sweep import asha_scheduler, smallest_first
    from tests.test_sweep_job import sweep_document

    epochs = 4
    spec = SweepJob.model_validate(sweep_document(
        train={"epochs": epochs, "global_batch_size": 128},
        tune={"scheduler": "asha", "grace_epochs": 1, "reduction_factor": 2}))
    # Largest first, ASHA would cut the smallest too (0.81 < the median of 0.91 and 0.76).
    accuracy = {"cnn-w0.25-d2": 0.80, "cnn-w0.5-d2": middle, "cnn-w1-d2": 0.90}
    scales = [Scale("cnn", 1.0, 2), Scale("cnn", 0.5, 2), Scale("cnn", 0.25, 2)]
    ordered = smallest_first(scales, spec.data)
    assert [s.name for s in ordered] == ["cnn-w0.25-d2", "cnn-w0.5-d2", "cnn-w1-d2"]

    def scripted(config):
        for epoch in range(1, epochs + 1):
            tune.report({"epoch": epoch, "val_accuracy": accuracy[config["variant"]["name"]] + 0.01 * epoch})

    tuner = tune.Tuner(
        tune.with_resources(scripted, {"cpu": 0.1}),
        param_space={"variant": tune.grid_search([{"name": s.name} for s in ordered])},
        tune_config=tune.TuneConfig(scheduler=asha_scheduler(spec, validation_rows=600), max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha"))
    trained = {r.config["variant"]["name"]: r.metrics["epoch"] for r in tuner.fit()}
    assert trained == {"cnn-w0.25-d2": epochs, "cnn-w0.5-d2": middle_epochs, "cnn-w1-d2": epochs}


def test_asha_replay_chooses_only_among_the_scales_that_finished():
    from bench.asha_replay import outcome

    summary = {"sweet_spot": "small-int8", "constraints": {"max_size_kb": 50}, "objective": "accuracy",
               "variants": [row("small-float", 0.85, 100_000), row("small-int8", 0.85, 27_000),
                            row("mid-p80", 0.84, 37_000), row("big-float", 0.90, 1_500_000)]}
    kept = outcome({"small": 6, "mid": 6, "big": 6}, 6, summary)
    assert kept["sweet_spot"] == "small-int8" and kept["same_sweet_spot"] and kept["epoch_fraction"] == 1.0
    cut = outcome({"small": 2, "mid": 6, "big": 6}, 6, summary)
    assert cut["sweet_spot"] == "mid-p80" and not cut["same_sweet_spot"]
    assert cut["stopped"] == ["small"] and cut["epochs_used"] == 14 and cut["epochs_full_grid"] == 18

"""A sweep's fine-tuned variants: one batch per concurrent trial, and a failed batch split into lone trials.

The Tune experiments are replaced by a recorder here (the logic under test is
ours: which trials are asked for, and whose error is reported); the real
trials run in test_sweep_job.py and the quickstart.
"""

from types import SimpleNamespace

from cluster.compression.steps import parse_steps
from cluster.tuning import sweep
from cluster.tuning.space import Scale, Variant

PRUNE = tuple(parse_steps([{"prune": {"final_sparsity": 0.5}}, {"quantize": {"mode": "int8"}}]))


def variants(count: int) -> list[Variant]:
    return [Variant(Scale("cnn", width, 2), "p50-int8", PRUNE) for width in (0.25, 0.5, 1.0, 2.0, 4.0)[:count]]


def test_the_variants_split_into_one_batch_per_concurrent_trial_in_order():
    five = variants(5)
    assert sweep.variant_batches(five, 1) == [five]
    assert sweep.variant_batches(five, 2) == [five[0::2], five[1::2]]
    assert sweep.variant_batches(five[:2], 4) == [[five[0]], [five[1]]]
    assert sum(sweep.variant_batches(five, 3), []) == [five[0], five[3], five[1], five[4], five[2]]


def test_a_trial_config_carries_every_variant_it_builds_and_a_lone_variant_names_its_trial():
    two = variants(2)
    config = sweep.batch_config(two)
    assert config["name"] == "cnn-w0.25-d2-p50-int8+1"
    assert [v["name"] for v in config["variants"]] == ["cnn-w0.25-d2-p50-int8", "cnn-w0.5-d2-p50-int8"]
    rebuilt = [Variant(Scale(**v["scale"]), v["pipeline_name"], tuple(parse_steps(v["pipeline"])))
               for v in config["variants"]]
    assert rebuilt == two
    assert sweep.batch_config(two[1:])["name"] == "cnn-w0.5-d2-p50-int8"


class Storage:
    """The run folder, as far as `fine_tune_variants` reads it: which variants were built whole."""

    def __init__(self, built=()):
        self.built = set(built)

    def exists(self, path: str) -> bool:
        return any(path == sweep.VARIANT_HISTORY.format(variant=name) for name in self.built)


def grid_recorder(failing: set[str], storage: Storage, calls: list):
    """Stands in for `run_grid`: a trial fails when it holds a failing variant, else builds its batch."""
    def run_grid(_trainable, configs, *_args):
        calls.append([c["name"] for c in configs])
        results = []
        for config in configs:
            names = {v["name"] for v in config["variants"]}
            error = RuntimeError(f"trial {config['name']} failed") if names & failing else None
            if error is None:
                storage.built |= names
            results.append(SimpleNamespace(error=error, config={"variant": config}))
        return results
    return run_grid


def test_a_failed_batch_runs_again_one_variant_per_trial_and_only_the_culprit_is_reported(monkeypatch):
    three = variants(3)
    storage, calls = Storage(), []
    monkeypatch.setattr(sweep, "run_grid", grid_recorder({three[1].name}, storage, calls))
    errors = sweep.fine_tune_variants(None, None, storage, three, concurrency=1)
    assert calls == [["cnn-w0.25-d2-p50-int8+2"], [v.name for v in three]]
    assert set(errors) == {three[1].name} and "failed" in errors[three[1].name]
    assert storage.built == {three[0].name, three[2].name}


def test_a_variant_built_before_its_batch_failed_is_not_built_again(monkeypatch):
    three = variants(3)
    # The batch's first variant was built whole before the third one broke the trial.
    storage, calls = Storage(built={three[0].name}), []
    monkeypatch.setattr(sweep, "run_grid", grid_recorder({three[2].name}, storage, calls))
    errors = sweep.fine_tune_variants(None, None, storage, three, concurrency=1)
    assert calls[1] == [three[1].name, three[2].name] and set(errors) == {three[2].name}


def test_batches_that_succeed_run_once(monkeypatch):
    four = variants(4)
    storage, calls = Storage(), []
    monkeypatch.setattr(sweep, "run_grid", grid_recorder(set(), storage, calls))
    assert sweep.fine_tune_variants(None, None, storage, four, concurrency=2) == {}
    assert calls == [["cnn-w0.25-d2-p50-int8+1", "cnn-w0.5-d2-p50-int8+1"]]

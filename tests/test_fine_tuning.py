"""Walking a variant's pipeline: the workers fit it, the driver rebuilds the same model from the stored weights."""

import tempfile

import numpy as np
import pytest
import tf_keras as keras

from cluster.compression.steps import parse_steps
from cluster.models import compile_classifier, save_keras_model
from cluster.spec import TrainSpec
from cluster.storage import RunStorage
from cluster.training import checkpoints
from cluster.training.fine_tuning import VariantPlan, has_record, restore_record, walk
from tests.compression_helpers import random_data, tiny_cnn

RECIPE = TrainSpec(epochs=1, global_batch_size=32, seed=3)


def plan_of(raw_steps, recipe=RECIPE, name="v") -> VariantPlan:
    steps = tuple(step.scheduled(8) for step in parse_steps(raw_steps))
    return VariantPlan(name, steps, tuple(recipe if step.fine_tuned else None for step in steps))


def fit_and_record(records: RunStorage, plan: VariantPlan, calls: list):
    """What a worker does for a fine-tuned step (fit a few batches, store the weights), without Ray."""
    images, labels = random_data(64, seed=1)

    def fit(index, step, prepared):
        calls.append((index, step.technique))
        optimizer = keras.optimizers.Adam(1e-3)
        compile_classifier(prepared.model, optimizer, 10)
        history = prepared.model.fit(images, labels, batch_size=32, epochs=1, verbose=0,
                                     callbacks=prepared.callbacks).history
        with tempfile.TemporaryDirectory() as directory:
            checkpoints.save(directory, prepared.model, optimizer,
                             {"task": plan.task(index), "epoch": 1, "history": [history]})
            records.upload(directory, plan.record(index))
        return [history]
    return fit


def folder(tmp_path, name) -> str:
    (tmp_path / name).mkdir()
    return str(tmp_path / name)


def restore_from(records: RunStorage, plan: VariantPlan):
    """What the driver does: every fine-tuned step's stored weights, which must be there."""
    def restore(index, step, prepared):
        history = restore_record(records, plan, index, prepared.model)
        assert history is not None
        return history
    return restore


@pytest.fixture
def baseline(tmp_path):
    path = tmp_path / "baseline.keras"
    save_keras_model(tiny_cnn(), path)
    return str(path)


def test_the_driver_rebuilds_exactly_the_model_the_workers_fitted(tmp_path, baseline):
    plan = plan_of([{"prune": {"final_sparsity": 0.5}}, {"cluster": {"number_of_clusters": 4}},
                    {"quantize": {"mode": "int8"}}])
    records, calls = RunStorage(str(tmp_path / "records")), []
    fitted, histories = walk(plan, baseline, folder(tmp_path, "w"), fit_and_record(records, plan, calls))
    assert calls == [(0, "prune"), (1, "cluster")]  # the post-training step is not fitted
    assert list(histories) == ["step1-prune", "step2-cluster"]
    assert has_record(records, plan, 0) and has_record(records, plan, 1)

    rebuilt, replayed = walk(plan, baseline, folder(tmp_path, "d"), restore_from(records, plan))
    assert replayed == histories
    assert [w.name for w in rebuilt.weights] == [w.name for w in fitted.weights]
    for ours, theirs in zip(rebuilt.get_weights(), fitted.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    kernel = [w for w in rebuilt.get_weights() if w.ndim == 4][0]
    assert len(np.unique(kernel)) <= 4  # the walk finalized the clustering, so the replay holds its values


def test_a_distilled_student_starts_from_the_recipes_seed(tmp_path, baseline):
    plan = plan_of([{"distill": {"student": {"family": "cnn", "width": 0.25}}}])
    first, second = [], []

    def keep(store):
        def fit(index, step, prepared):
            store.extend(w.copy() for w in prepared.model.student.get_weights())
            return []
        return fit
    walk(plan, baseline, folder(tmp_path, "a"), keep(first))
    keras.utils.set_random_seed(99)  # whatever ran before, the student is the same
    walk(plan, baseline, folder(tmp_path, "b"), keep(second))
    assert first and len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_weights_fitted_for_another_recipe_or_step_are_not_taken(tmp_path, baseline):
    plan = plan_of([{"prune": {"final_sparsity": 0.5}}])
    records = RunStorage(str(tmp_path / "records"))
    assert not has_record(records, plan, 0)
    walk(plan, baseline, folder(tmp_path, "w"), fit_and_record(records, plan, []))
    assert has_record(records, plan, 0)
    longer = plan_of([{"prune": {"final_sparsity": 0.5}}], recipe=RECIPE.model_copy(update={"epochs": 2}))
    sparser = plan_of([{"prune": {"final_sparsity": 0.75}}])
    assert not has_record(records, longer, 0) and not has_record(records, sparser, 0)
    # A record cut off while its meta.json was written is not taken either.
    meta = tmp_path / "records" / plan.record(0) / checkpoints.META_FILE
    meta.write_text(meta.read_text()[:40])
    assert not has_record(records, plan, 0)
    assert restore_record(records, plan, 0, tiny_cnn()) is None


def test_a_plan_travels_to_the_workers_whole():
    plan = plan_of([{"distill": {"student": {"family": "bncnn", "width": 0.5}}}, {"prune": {"sparsity_m_by_n": [2, 4]}},
                    {"qat": {}}])
    again = VariantPlan.load(plan.dump())
    assert again == plan and [again.task(i) for i in (0, 1, 2)] == [plan.task(i) for i in (0, 1, 2)]
    assert again.recipes[0] == RECIPE and plan.record(1) == "v/step2-prune"

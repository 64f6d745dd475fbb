"""The input-pipeline benchmark's bookkeeping: which epochs count, and the order runs take (no cluster)."""

import pytest

from bench.input_pipeline import by_mode, epoch_plan, rotated, wait_fraction


def test_the_plan_alternates_with_a_warm_up_of_each_kind():
    assert epoch_plan(1) == ["real", "in_memory", "real", "in_memory"]
    assert epoch_plan(2) == ["real", "in_memory"] * 3


def test_each_kind_is_the_median_of_its_epochs_after_its_warm_up():
    plan = epoch_plan(2)
    # Warm-ups (100, 200) are slow and must not count; real 1000/3000, in memory 2000/4000.
    figures = by_mode(plan, [100.0, 200.0, 1000.0, 2000.0, 3000.0, 4000.0], 60.0)
    assert figures["real"] == {"samples_per_second": 2000.0, "per_epoch_sps": [100.0, 1000.0, 3000.0],
                               "run_wall_seconds": 60.0}
    assert figures["in_memory"] == {"samples_per_second": 3000.0, "per_epoch_sps": [200.0, 2000.0, 4000.0],
                                    "run_wall_seconds": 60.0}


def test_rotation_puts_every_configuration_in_every_slot_once():
    order = ["1x1", "2x1", "1x2", "tfdata"]
    repetitions = [rotated(order, rep) for rep in range(len(order))]
    assert repetitions[1] == ["2x1", "1x2", "tfdata", "1x1"]
    for config in order:
        assert sorted(run.index(config) for run in repetitions) == [0, 1, 2, 3]
    assert rotated(order, len(order)) == order


def test_wait_is_the_step_time_lost_to_input():
    assert wait_fraction(900.0, 1000.0) == pytest.approx(0.1)
    assert wait_fraction(1100.0, 1000.0) == 0.0  # faster than in memory: no wait, not negative
    assert wait_fraction(None, 1000.0) is None

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


def test_the_to_tf_row_is_shown_as_the_before_and_not_held_to_the_target():
    from bench.input_pipeline import scaling_key
    from bench.render import input_pipeline, targets

    assert scaling_key(1, 2) == "ray_1wx2cpu" and scaling_key(1, 2, "to_tf") == "ray_1wx2cpu_to_tf"
    row = {"workers": 1, "cpus_per_worker": 2, "samples_per_second": 4000.0, "input_wait_fraction": 0.02}
    result = {"settings": {"full_data": True, "fraction": 0.5, "model": {"family": "cnn", "width": 1.0},
                           "batch": 256, "measured_epochs": 1, "repetitions": 3},
              "train_rows": 27000, "plan": epoch_plan(1), "augment": [], "tfdata_threads": 2, "prefetch_batches": 4,
              "medians": {"ray_1wx2cpu_real": 4000.0, "ray_1wx2cpu_in_memory": 4100.0, "ray_1wx2cpu_to_tf_real": 2000.0,
                          "ray_1wx2cpu_to_tf_in_memory": 4100.0, "tfdata_real": 3900.0, "tfdata_in_memory": 4000.0},
              "comparisons": {"ray_1wx2cpu": {**row, "input": "shard_batches", "ratio_vs_tfdata": 1.03},
                              "ray_1wx2cpu_to_tf": {**row, "input": "to_tf", "ratio_vs_tfdata": 0.51,
                                                    "input_wait_fraction": 0.5},
                              "tfdata": {"samples_per_second": 3900.0, "ratio_vs_tfdata": 1.0,
                                         "input_wait_fraction": 0.025}}}
    rows = targets({"input_pipeline": result})
    assert [r[0] for r in rows] == ["input pipeline: Ray (1 worker × 2 CPU) vs tf.data ≥ 1.0×",
                                   "input wait, Ray 1 worker × 2 CPU < 5 % of step time"], rows
    table = "\n".join(input_pipeline(result))
    assert "`to_tf` (before)" in table and "0.51" in table


def test_tfdata_in_two_processes_trains_as_one_strategy_on_half_the_batch_each():
    """The like-for-like baseline of a 2-worker Ray row: two probe processes, one MultiWorkerMirroredStrategy."""
    from bench import common

    payload = {"train": str(common.SAMPLE / "train.parquet"), "rows": 1024, "batch": 256, "plan": epoch_plan(1),
               "model": {"family": "cnn", "width": 0.25, "depth": 2}, "threads": 1,
               "augment": [{"op": "flip_left_right", "p": 0.5}]}
    result = common.run_probe_group("bench.input_pipeline", payload, workers=2, timeout=600)
    assert result["workers"] == 2 and result["replicas"] == 2, result
    for mode in ("real", "in_memory"):
        assert len(result[mode]["per_epoch_sps"]) == 2 and result[mode]["samples_per_second"] > 0


def test_a_failing_probe_worker_stops_the_others_and_is_the_one_reported(tmp_path, monkeypatch):
    from bench import common

    (tmp_path / "split_probe.py").write_text(
        "import json, sys, time\n"
        "payload = json.loads(sys.argv[2])\n"
        "if payload['rank'] == 1:\n"
        "    sys.exit(3)\n"
        "time.sleep(30)\n"  # worker 0 waits, as for a collective with worker 1
        f"open({str(tmp_path / 'finished')!r}, 'w').close()\n")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    with pytest.raises(RuntimeError, match=r"worker 1 of 2, failed \(exit 3\)"):
        common.run_probe_group("split_probe", {}, workers=2, timeout=600)
    assert not (tmp_path / "finished").exists()  # worker 0 was stopped, not waited for


def test_a_multi_worker_ray_row_is_also_held_to_tfdata_in_as_many_processes():
    from bench.render import input_pipeline, targets

    result = {"settings": {"full_data": True, "fraction": 0.5, "model": {"family": "cnn", "width": 1.0},
                           "batch": 256, "measured_epochs": 1, "repetitions": 3},
              "train_rows": 27000, "plan": epoch_plan(1), "augment": [], "tfdata_threads": 2, "prefetch_batches": 4,
              "medians": {"ray_2w_real": 3000.0, "ray_2w_in_memory": 3100.0, "tfdata_real": 4000.0,
                          "tfdata_in_memory": 4100.0, "tfdata_2w_real": 2900.0, "tfdata_2w_in_memory": 3000.0},
              "comparisons": {
                  "ray_2w": {"workers": 2, "cpus_per_worker": 1, "input": "shard_batches", "samples_per_second": 3000.0,
                             "ratio_vs_tfdata": 0.75, "ratio_vs_tfdata_same_layout": 3000.0 / 2900.0,
                             "input_wait_fraction": 1 - 3000.0 / 3100.0},
                  "tfdata": {"workers": 1, "threads": 2, "samples_per_second": 4000.0, "ratio_vs_tfdata": 1.0,
                             "input_wait_fraction": 1 - 4000.0 / 4100.0},
                  "tfdata_2w": {"workers": 2, "threads": 1, "samples_per_second": 2900.0, "ratio_vs_tfdata": 0.725,
                                "input_wait_fraction": 1 - 2900.0 / 3000.0}}}
    rows = targets({"input_pipeline": result})
    assert rows == [
        ["input pipeline: Ray (2 workers × 1 CPU) vs tf.data ≥ 1.0×", "0.75×", "**missed**"],
        ["input pipeline: Ray (2 workers × 1 CPU) vs tf.data in 2 processes × 1 thread under the same strategy "
         "≥ 1.0× (like for like)", "1.03×", "**met**"],
        ["input wait, Ray 2 workers × 1 CPU < 5 % of step time", "3.2 %", "**met**"]], rows
    table = "\n".join(input_pipeline(result))
    assert "tf.data, 2 processes × 1 thread, MultiWorkerMirroredStrategy" in table
    assert "0.72×" in table  # the strategy's own cost against one process, stated under the table

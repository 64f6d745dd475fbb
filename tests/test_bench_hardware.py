"""The hardware benchmark's MFU target rows: one per Ray Train layout of the CNN, against the 0.8x bound."""

from bench.render import hardware_targets


def run(workers: int, cpus: int, ratio: float | None) -> dict:
    return {"workers": workers, "cpus_per_worker": cpus, "samples_per_second": 1.0, "flops": 1.0,
            "mfu": ratio and 0.4 * ratio, "mfu_vs_in_process": ratio, "step_ms": 1.0}


def test_each_ray_train_layout_of_the_cnn_is_held_to_the_bound():
    result = {"models": {"mlp": {"in_process_mfu": 0.2, "ray_train": {"ray_1wx2cpu": run(1, 2, 0.1)}},
                         "cnn": {"in_process_mfu": 0.4, "ray_train": {"ray_1wx2cpu": run(1, 2, 0.85),
                                                                      "ray_2w": run(2, 1, 0.79)}}}}
    rows = hardware_targets(result)
    assert [row[0] for row in rows] == ["MFU: cnn on Ray Train (1 worker × 2 CPU) ≥ 0.8× in-process MFU",
                                        "MFU: cnn on Ray Train (2 workers × 1 CPU) ≥ 0.8× in-process MFU"]
    assert [row[2] for row in rows] == ["**met**", "**missed**"]
    assert rows[0][1].startswith("0.85×")


def test_a_layout_without_a_figure_is_not_met():
    result = {"models": {"cnn": {"in_process_mfu": 0.4, "ray_train": {"ray_2w": run(2, 1, None)}}}}
    assert hardware_targets(result)[0][2] == "**missed**"

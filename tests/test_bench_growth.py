from bench import growth


def point(layout: str, rows: int, wall: float, fit: float) -> dict:
    return {"layout": layout, "fraction": rows / 4000, "train_rows": rows, "run_wall_seconds": wall,
            "fit_seconds": fit}


def test_each_layouts_fixed_cost_is_its_own_lines_intercept_held_to_15_s():
    # 2 x 1: 20 s + 2 s per 1,000 rows; 1 x 2: 12 s + 1 s per 1,000 rows (fit: 0.5 s per 1,000 rows).
    training = [point("2x1", rows, 20 + 0.002 * rows, 1 + 0.0005 * rows) for rows in (1000, 2000, 4000)]
    training += [point("1x2", rows, 12 + 0.001 * rows, 1 + 0.0005 * rows) for rows in (1000, 2000, 4000)]
    fits = growth.training_fits(training)
    assert list(fits) == ["2x1", "1x2"]
    assert abs(fits["2x1"]["run_wall_vs_rows"]["intercept"] - 20) < 1e-9
    assert abs(fits["1x2"]["run_wall_vs_rows"]["slope"] - 0.001) < 1e-12
    targets = growth.fixed_cost_targets(fits)
    assert [(t["figure"], t["met"]) for t in targets] == [("20.0 s", False), ("12.0 s", True)]
    assert targets[1]["requirement"] == "fixed cost of a Ray Train run, 1 × 2 CPU ≤ 15 s"


def test_a_fixed_cost_of_exactly_15_s_is_met_and_a_tenth_more_is_not():
    for intercept, met in ((15.0, True), (15.1, False)):
        training = [point("1x2", rows, intercept + 0.001 * rows, 0.001 * rows) for rows in (1000, 3000)]
        (target,) = growth.fixed_cost_targets(growth.training_fits(training))
        assert target["met"] is met, intercept

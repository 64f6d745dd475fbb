"""The frontier benchmark's arithmetic (no cluster): which point sets the compression ratio."""

from bench.frontier import compression_ratio


def test_a_point_exactly_half_a_point_below_the_default_cnn_counts():
    # 0.9349 - 0.9299 is 50 of 10,000 test images: 0.5 pt, though the float difference is 0.50000000000001.
    base = {"accuracy": 0.9349, "size_bytes_gzip": 2_392_655}
    points = [{"name": "w1-int8", "accuracy": 0.9299, "size_bytes_gzip": 59_971},
              {"name": "w1-float", "accuracy": 0.9304, "size_bytes_gzip": 230_051},
              {"name": "w1-pruned", "accuracy": 0.9298, "size_bytes_gzip": 43_703}]
    ratio = compression_ratio(points, base)
    assert ratio["name"] == "w1-int8" and ratio["drop_pt"] == 0.5
    assert round(ratio["ratio"], 1) == 39.9


def test_no_point_close_enough_gives_no_ratio():
    base = {"accuracy": 0.93, "size_bytes_gzip": 1000}
    assert compression_ratio([{"name": "a", "accuracy": 0.92, "size_bytes_gzip": 10}], base) is None


def test_inference_times_the_frontier_runs_own_files_and_skips_files_that_are_not_them(tmp_path):
    """The inference benchmark finds the full case's files by the frontier run's names, and times them only
    when each file's gzip size is the one that run recorded."""
    import json

    from bench import common, inference
    from cluster.evaluation.files import gzip_size_bytes
    from cluster.evaluation.export import export_tflite
    from cluster.models import ModelShape, build_model

    runs = tmp_path / "scratch" / "runs"
    files = {"default": runs / "frontier-default-cnn" / "model.tflite", "best": runs / "frontier-full" / "best.tflite",
             "close": runs / "frontier-full-exhaustive" / "variants" / "m-w0.5" / "model.tflite"}
    for key, width in (("default", 1.0), ("best", 0.25), ("close", 0.5)):
        files[key].parent.mkdir(parents=True)
        export_tflite(build_model("mlp", ModelShape((8, 8, 1), 3), width=width), files[key])
    size = {key: gzip_size_bytes(path) for key, path in files.items()}
    (runs / "frontier-full" / "summary.json").write_text(json.dumps(
        {"variants": [{"name": "m-w0.25", "size_bytes_gzip": size["best"]}]}))
    case = {"case": {"name": "full"}, "sweet_spot": "m-w0.25",
            "default_cnn": {"accuracy": 0.93, "size_bytes_gzip": size["default"]},
            "points": [{"name": "m-w0.25", "accuracy": 0.91, "size_bytes_gzip": size["best"]},
                       {"name": "m-w0.5", "accuracy": 0.928, "size_bytes_gzip": size["close"]}]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "frontier.json").write_text(json.dumps({"started": "then", "cases": [case]}))
    ctx = common.Context(quick=True, results=results, scratch=tmp_path / "scratch")
    settings = {"repetitions": 1, "num_threads": [1], "batch_calls": 10, "throughput_batch": 4}

    timed = inference.frontier_comparison(settings, ctx)
    assert timed["baseline"] == "default CNN (float)"
    assert set(timed["ratios"]) == {"sweet spot `m-w0.25`", "within 0.5 pt `m-w0.5`"}
    assert all(r["p50_latency_lower_by"] > 0 for r in timed["ratios"].values())

    export_tflite(build_model("mlp", ModelShape((8, 8, 1), 3), width=0.75), files["close"])  # another file
    assert inference.frontier_comparison(settings, ctx) is None


def test_recipe_runs_on_the_same_data_are_made_once_per_bench_run(tmp_path, monkeypatch):
    from bench import common, compression

    made = []
    monkeypatch.setattr(compression, "run_anchor", lambda data_dir: made.append(data_dir) or {"run": len(made)})
    ctx = common.Context(quick=True, results=tmp_path, scratch=tmp_path)
    assert compression.recipe_runs(tmp_path / "sample", 1, ctx, "compression") == [{"run": 1}]
    assert compression.recipe_runs(tmp_path / "sample", 3, ctx, "frontier") == [{"run": 1}, {"run": 2}, {"run": 3}]
    assert compression.recipe_runs(tmp_path / "full", 1, ctx, "frontier") == [{"run": 4}]
    assert made == [tmp_path / "sample"] * 3 + [tmp_path / "full"]

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

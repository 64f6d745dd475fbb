"""The sweep report: the verdict names the sweet spot or the closest miss; the HTML page is self-contained."""

from cluster.reporting import html_page, markdown, verdict
from cluster.results import SweepSummary


def summary(sweet_spot="b", closest=None):
    rows = [
        {"name": "a", "technique": "float", "accuracy": 0.9, "size_bytes_gzip": 400_000, "latency_ms_p95": 0.5,
         "size_ratio": 1.0, "params": 10, "params_nonzero": 10, "flops": 100, "sparsity": 0.0},
        {"name": "b", "technique": "quantize", "accuracy": 0.89, "size_bytes_gzip": 100_000, "latency_ms_p95": 0.2,
         "size_ratio": 4.0, "accuracy_drop_pt": 1.0, "params": 10, "params_nonzero": 10, "flops": 100, "sparsity": 0.0},
    ]
    return SweepSummary.model_validate({"name": "s", "variants": rows, "baseline": "a", "sweet_spot": sweet_spot, "closest": closest,
            "closest_violations": {"max_size_kb": 0.5} if closest else {},
            "pareto": {"size_bytes_gzip": ["b", "a"], "latency_ms_p95": ["b"]},
            "constraints": {"max_size_kb": 200.0 if sweet_spot else 50.0, "min_accuracy": None},
            "failed": [{"name": "c", "error": "RuntimeError: boom"}], "learning_curves": {
                "a": [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.85}]},
            "artifacts": {"best": "/x/best.tflite"}})


def test_verdict_names_the_sweet_spot_with_its_figures():
    text = verdict(summary())
    assert "Sweet spot: `b`" in text and "100.0 KB gzip" in text and "4.0x smaller" in text


def test_verdict_names_the_closest_when_nothing_fits():
    text = verdict(summary(sweet_spot=None, closest="b"))
    assert "No variant meets every constraint" in text and "`b`" in text and "max_size_kb by 50%" in text


def test_markdown_marks_sweet_spot_pareto_and_failures():
    text = markdown(summary())
    row = next(line for line in text.splitlines() if line.startswith("| b "))
    assert [cell.strip() for cell in row.split("|")[1:5]] == ["b", "quantize", "0.8900", "-1.00"]  # 1 pt below the baseline
    assert "sweet spot, Pareto" in row
    assert "`c`: RuntimeError: boom" in text


def test_html_page_embeds_three_plots():
    page = html_page(summary(), references=[{"name": "toolkit recipe", "accuracy": 0.87, "size_bytes_gzip": 8100,
                                             "latency_ms_p95": None}])
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page and "Sweet spot: `b`" in page

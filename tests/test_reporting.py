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


def test_html_page_embeds_four_plots():
    page = html_page(summary())
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page and "Sweet spot: `b`" in page


def test_a_reference_is_drawn_only_on_the_axes_it_has_a_position_on(monkeypatch):
    """The recipe's point (a size) appears on the size plot; a published model (a parameter count) on the
    parameter plot; neither where it has no position."""
    from cluster import reporting
    from cluster.results import ReferencePoint

    drawn = []
    real_scatter = reporting.plt.Axes.scatter

    def scatter(axis, x, y, *args, label=None, **kwargs):
        drawn.append((axis.get_title() or "", label, x))
        return real_scatter(axis, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(reporting.plt.Axes, "scatter", scatter)
    with_references = summary().model_copy(update={"references": [
        ReferencePoint(name="recipe", accuracy=0.87, size_bytes_gzip=8100),
        ReferencePoint(name="paper", accuracy=0.89, params=14_900)]})
    for cost in reporting.AXES:
        reporting.pareto_plot(with_references, cost)
    labels = [label for _, label, _ in drawn if label]
    assert [x for _, label, x in drawn if label and label.startswith("recipe")] == [8.1]  # KB, size plot only
    assert [x for _, label, x in drawn if label and label.startswith("paper")] == [14_900]  # params plot only
    assert len([label for label in labels if label.startswith(("recipe", "paper"))]) == 2


def test_a_reference_needs_a_position_to_be_drawn():
    import pytest
    from pydantic import ValidationError

    from cluster.spec import Reference

    assert Reference(name="paper", accuracy=0.89, params=14_900).params == 14_900
    with pytest.raises(ValidationError, match="give size_kb, params or latency_ms_p95"):
        Reference(name="paper", accuracy=0.89)

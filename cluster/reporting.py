"""The sweep's report: a Markdown table and a self-contained HTML page with the trade-off plots.

The plots say the whole story on their own: every variant as a point
(accuracy against gzip size, and against p95 latency), the Pareto frontier as
a line, the constraints as dashed lines with the feasible region shaded, the
sweet spot ringed, and any reference point (e.g. the toolkit's own recipe)
marked. Images are embedded as base64 PNG, so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from cluster.results import SweepSummary  # noqa: E402
from cluster.tables import COLUMNS, variant_table  # noqa: E402

AXES = {
    "size_bytes_gzip": ("gzip size of the TFLite file (KB)", 1e-3, "max_size_kb", 1.0),
    "latency_ms_p95": ("p95 latency at batch 1 (ms)", 1.0, "max_latency_ms_p95", 1.0),
    "params_nonzero": ("nonzero parameters", 1.0, "max_params", 1.0),
}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def cost_of(point, cost: str):
    """A variant's or a reference's position on `cost`'s axis (a reference gives its parameter count)."""
    if cost == "params_nonzero" and getattr(point, "params_nonzero", None) is None:
        return point.params
    return getattr(point, cost)


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, accuracy) pairs no other pair beats on both: the frontier's steps, cheapest first."""
    steps = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not steps or accuracy > steps[-1][1]:
            steps.append((cost, accuracy))
    return steps


def pareto_plot(summary: SweepSummary, cost: str) -> str:
    """Accuracy against `cost` (log x): every variant, the frontier, the constraint, the sweet spot,
    and the summary's reference points that have a position on this axis."""
    label, scale, constraint, _ = AXES[cost]
    rows = [v for v in summary.variants if v.accuracy is not None and cost_of(v, cost) is not None]
    named_front = summary.pareto.get(cost)
    if named_front is None:
        on_front = {r.name for r in rows if (cost_of(r, cost), r.accuracy) in front([(cost_of(v, cost), v.accuracy)
                                                                                      for v in rows])}
    else:
        on_front = set(named_front)
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for row in rows:
        x, marked = cost_of(row, cost) * scale, row.name in on_front
        axis.scatter(x, row.accuracy, s=60 if marked else 30, color="tab:blue" if marked else "tab:gray",
                     alpha=0.9 if marked else 0.6, zorder=3)
        axis.annotate(row.name, (x, row.accuracy), fontsize=7, xytext=(4, 3), textcoords="offset points")
    points = sorted((cost_of(r, cost) * scale, r.accuracy) for r in rows if r.name in on_front)
    if points:
        axis.step([p[0] for p in points], [p[1] for p in points], where="post", color="tab:blue",
                  label="Pareto frontier", zorder=2)
    sweet = next((r for r in rows if r.name == summary.sweet_spot), None)
    if sweet:
        axis.scatter(cost_of(sweet, cost) * scale, sweet.accuracy, s=220, facecolors="none", edgecolors="tab:green",
                     linewidths=2.5, label=f"sweet spot: {sweet.name}", zorder=4)
    limits = summary.constraints
    if limits.get(constraint) is not None:
        axis.axvline(limits[constraint], color="tab:red", linestyle="--", label=f"{constraint} = {limits[constraint]:g}")
    if limits.get("min_accuracy") is not None:
        axis.axhline(limits["min_accuracy"], color="tab:orange", linestyle="--",
                     label=f"min_accuracy = {limits['min_accuracy']:g}")
    markers = iter(["*", "P", "X", "D", "^", "v", "s", "p"])
    for reference in summary.references:
        if cost_of(reference, cost) is not None:
            axis.scatter(cost_of(reference, cost) * scale, reference.accuracy, marker=next(markers, "*"), s=130,
                         color="tab:purple", label=f"{reference.name} ({reference.accuracy:.3f})", zorder=4)
    axis.set_xscale("log")
    axis.set_xlabel(label + " — log scale; left is smaller/faster")
    axis.set_ylabel("test accuracy of the TFLite file")
    axis.set_title(f"Accuracy vs {label.split(' (')[0]}")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    return _png(figure)


def learning_curves_plot(summary: SweepSummary) -> str:
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    for name, history in summary.learning_curves.items():
        epochs = [m["epoch"] for m in history if m.get("val_accuracy") is not None]
        values = [m["val_accuracy"] for m in history if m.get("val_accuracy") is not None]
        if epochs:
            axis.plot(epochs, values, marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.set_title("Per-trial learning curves (scale trials; compression fine-tuning steps)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    return _png(figure)


def markdown(summary: SweepSummary) -> str:
    lines = [f"# Sweep `{summary.name}`", "", verdict(summary), "", variant_table(summary, wide=True, markdown=True)]
    if summary.failed:
        lines += ["", "Failed trials:", ""] + [f"- `{f.name}`: {f.error[:300]}" for f in summary.failed]
    if summary.skipped_too_large:
        lines += ["", "Not trained, since none of their files could fit max_size_kb (judged from their untrained "
                  f"models): {', '.join(f'`{name}`' for name in summary.skipped_too_large)}."]
    lines += ["", "Every figure is measured on the TFLite file a user would deploy, in one process on one node "
              "(accuracy: LiteRT over the whole test split; latency: batch 1, "
              f"{summary.num_threads} thread(s)). ×: the baseline's gzip size over the variant's; Δpt: accuracy "
              "against the baseline, in points.", ""]
    return "\n".join(lines)


def verdict(summary: SweepSummary) -> str:
    limits = {k: v for k, v in summary.constraints.items() if v is not None}
    wanted = ", ".join(f"{k} = {v:g}" for k, v in limits.items()) or "no constraints"
    row = summary.variant(summary.sweet_spot)
    if row is not None:
        return (f"**Sweet spot: `{row.name}`** ({wanted}): accuracy {row.accuracy:.4f}, "
                f"{row.size_bytes_gzip / 1000:.1f} KB gzip ({row.size_ratio or 1:.1f}x smaller than the "
                f"baseline), p95 {row.latency_ms_p95:.3f} ms. Deployable file: `{summary.artifacts.get('best')}`.")
    closest = summary.closest
    missed = ", ".join(f"{k} by {v:.0%}" for k, v in summary.closest_violations.items())
    return (f"**No variant meets every constraint** ({wanted}). The closest is `{closest}`, which misses {missed}."
            if closest else "**No variant was measured.**")


def html_page(summary: SweepSummary) -> str:
    columns = COLUMNS
    rows_html = ["<tr>" + "".join(f"<th>{html.escape(c.header)}</th>" for c in columns) + "</tr>"]
    for row in summary.variants:
        rows_html.append("<tr>" + "".join(f"<td>{html.escape(c.read(row, summary))}</td>" for c in columns) + "</tr>")
    images = [pareto_plot(summary, cost) for cost in AXES] + [learning_curves_plot(summary)]
    verdict_html = html.escape(verdict(summary)).replace("**", "")
    figures = "".join(f'<img alt="plot" src="data:image/png;base64,{data}">' for data in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sweetspot: {html.escape(summary.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}} img{{max-width:49%;}}
table{{border-collapse:collapse;font-size:13px;}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;}}
.verdict{{font-size:17px;background:#eef7ee;padding:10px;border-left:5px solid #2a2;}}</style></head>
<body><h1>Sweep {html.escape(summary.name)}</h1>
<p class="verdict">{verdict_html}</p>
<div>{figures}</div>
<h2>Variants</h2><table>{''.join(rows_html)}</table>
<p>Every figure is measured on the exported TFLite file, in one process on one node.</p>
</body></html>
"""

"""Every table the project prints or writes: one column list for variants, one renderer (tabulate).

The console gets plain text (`sweetspot results`, `sweetspot quickstart`),
the reports GitHub Markdown; both read the same columns from typed results.
The compact columns fit 100 characters; `wide` adds the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tabulate import tabulate

from cluster.results import VariantResult

DASH = "-"


def render(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Cells are already text: numbers are formatted by their column, never re-parsed."""
    return tabulate(rows, headers, tablefmt="github" if markdown else "simple", disable_numparse=True)


def _fixed(value, form: str, scale: float | None = None) -> str:
    if value is None:
        return DASH
    return form.format(value if scale is None else value * scale)


def _change_pt(row: VariantResult) -> float | None:
    """Accuracy against the baseline in points: negative when the variant is less accurate."""
    return None if row.accuracy_drop_pt is None else 0.0 - row.accuracy_drop_pt  # 0.0 - 0.0 is +0.0, not -0.0


def _throughput(row: VariantResult) -> str:
    best = row.max_batch_throughput
    return DASH if best is None else f"{best[1]:,.0f} @{best[0]}"


def flags(row: VariantResult, summary) -> str:
    """sweet spot / Pareto (on the size front) / baseline, as the summary says."""
    pareto = getattr(summary, "pareto", None) or {}
    marks = (("sweet spot", row.name == getattr(summary, "sweet_spot", None)),
             ("Pareto", row.name in pareto.get("size_bytes_gzip", ())),
             ("baseline", row.name == getattr(summary, "baseline", None)))
    return ", ".join(flag for flag, on in marks if on)


@dataclass(frozen=True)
class Column:
    header: str
    read: Callable[[VariantResult, object], str]  # (row, its summary) -> cell text
    compact: bool = False  # in the default console table


COLUMNS = (
    Column("variant", lambda r, _: r.name, compact=True),
    Column("technique", lambda r, _: r.technique, compact=True),
    Column("accuracy", lambda r, _: _fixed(r.accuracy, "{:.4f}"), compact=True),
    Column("Δpt", lambda r, _: _fixed(_change_pt(r), "{:+.2f}"), compact=True),
    Column("gzip KB", lambda r, _: _fixed(r.size_bytes_gzip, "{:.1f}", 1e-3), compact=True),
    Column("×", lambda r, _: _fixed(r.size_ratio, "{:.1f}"), compact=True),
    Column("p95 ms", lambda r, _: _fixed(r.latency_ms_p95, "{:.3f}"), compact=True),
    Column("", flags, compact=True),
    Column("params", lambda r, _: _fixed(r.params, "{:,}")),
    Column("non-zero", lambda r, _: _fixed(r.params_nonzero, "{:,}")),
    Column("MACs", lambda r, _: _fixed(r.flops, "{:,}")),
    Column("sparse MACs", lambda r, _: _fixed(r.flops_sparse, "{:,}")),
    Column("sparsity", lambda r, _: _fixed(r.sparsity, "{:.3f}")),
    Column("size KB", lambda r, _: _fixed(r.size_bytes, "{:.1f}", 1e-3)),
    Column("p50 ms", lambda r, _: _fixed(r.latency_ms_p50, "{:.3f}")),
    Column("p99 ms", lambda r, _: _fixed(r.latency_ms_p99, "{:.3f}")),
    Column("samples/s @batch", lambda r, _: _throughput(r)),
    Column("threads", lambda r, _: _fixed(r.num_threads, "{}")),
    Column("peak RSS MB", lambda r, _: _fixed(r.peak_rss_bytes, "{:.1f}", 1e-6)),
)


def variant_table(summary, wide: bool = False, markdown: bool = False) -> str:
    """One row per variant of a sweep, compress or evaluate summary (`read_summary`'s models)."""
    columns = [c for c in COLUMNS if wide or c.compact]
    rows = [[column.read(row, summary) for column in columns] for row in summary.variants]
    return render([c.header for c in columns], rows, markdown)

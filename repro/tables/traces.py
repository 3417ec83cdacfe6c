"""Training series of a table's runs: one column of each run's ``train_log.csv`` against generator step.

A spec's ``traces`` draw one series for several rows on shared axes: by default a thin line per seed under the
row's mean (at the steps every seed logged); with ``per_seed: true`` every seed's line in its row's colour and no
mean, so the spread between runs is what the figure shows (Odena et al. 2018, Sec. 3: per-run condition-number
traces split into good and bad runs, which a mean hides). ``end_value`` is a run's value at the end of training
that ``repro.tables.correlate`` relates to its final metrics.
"""
from __future__ import annotations

import csv
import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

from repro.plotting import save_figure
from repro.tables.plan import Run, record_value
from repro.tables.spec import Column, TableSpec, Trace

__all__ = ["TRAIN_LOG", "series", "end_value", "column_value", "column_series", "curve_points", "column_curve",
           "draw_trace"]

TRAIN_LOG = "train_log.csv"


def series(path: Path, key: str) -> dict[int, float]:
    """``{step: value}`` of one column of a run's ``train_log.csv`` (rows where it was logged), in step order."""
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        points = {int(float(r["step"])): float(r[key]) for r in csv.DictReader(f) if r.get(key) and r.get("step")}
    return dict(sorted(points.items()))


def end_value(points: dict[int, float], last: int) -> float | None:
    """The mean of the ``last`` latest logged values (``last`` = 1: the final value); None when fewer were logged."""
    if len(points) < last:
        return None
    return statistics.fmean(list(points.values())[-last:])


def column_series(run: Run, col: Column) -> dict[int, float]:
    """A trace column's series (``Column.trace_last``) in ``run``'s train_log.csv."""
    return series(run.results_dir / TRAIN_LOG, col.key)


def column_value(run: Run, record: dict[str, Any], col: Column) -> Any:
    """``run``'s value of ``col``: its record's metric, or for a trace column the mean of the last ``trace_last``
    points of its series (None when fewer were logged)."""
    if not col.trace_last:
        return record_value(record, col.key)
    return end_value(column_series(run, col), col.trace_last)


def curve_points(record: dict[str, Any], key: str) -> dict[int, float]:
    """A record's evaluation curve of metric ``key`` (``curves``) as ``{step: value}``, finite values only."""
    return {int(s): float(v) for s, v in (record.get("curves") or {}).get(key, [])
            if isinstance(v, (int, float)) and math.isfinite(v)}


def column_curve(run: Run, record: dict[str, Any], col: Column) -> dict[int, float]:
    """``run``'s curve of ``col`` as ``{step: value}``: its record's evaluation curve, or for a trace column its
    logged series."""
    return column_series(run, col) if col.trace_last else curve_points(record, col.key)


def draw_trace(spec: TableSpec, trace: Trace, out: Path) -> Path | None:
    """``trace.key`` against generator step for each of ``trace.rows`` on one pair of axes, one colour per row:
    a thin line per seed and the mean over seeds (at the steps every seed logged), or with ``trace.per_seed``
    the seeds' lines alone, one legend entry per row; None if nothing ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    drawn = False
    for i, row_id in enumerate(trace.rows):
        row, colour = spec.row(row_id), f"C{i}"
        runs = [s for s in (series(Run(spec, row, seed).results_dir / TRAIN_LOG, trace.key) for seed in spec.seeds_of(row)) if s]
        for j, s in enumerate(runs):
            label = f"{row.label} (n={len(runs)}, one line per seed)" if trace.per_seed and j == 0 else None
            ax.plot(list(s), list(s.values()), color=colour, lw=0.8 if trace.per_seed else 0.7,
                    alpha=0.75 if trace.per_seed else 0.35, label=label)
        if runs and not trace.per_seed:
            steps = sorted(set.intersection(*(set(s) for s in runs)))
            ax.plot(steps, [statistics.fmean(s[t] for s in runs) for t in steps], color=colour, lw=2,
                    marker="o", ms=3, label=f"{row.label} (mean of n={len(runs)})")
        drawn = drawn or bool(runs)
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="generator step", ylabel=trace.label or trace.key)
    ax.legend(fontsize=8)
    how = "one line per seed" if trace.per_seed else "thin: each seed"
    ax.set_title(textwrap.fill(f"{spec.name}: {trace.title or trace.label or trace.key} ({how})", 70), fontsize=10)
    return save_figure(fig, out)

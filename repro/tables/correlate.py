"""Correlation across runs between a training series' end value and a final metric (a spec's ``correlations``).

Odena et al. 2018 (Sec. 3-4) track the log condition number of each run's generator beside its scores and find
that it separates good runs from bad ones. Here each finished run of a correlation's rows is one point: x = the
mean of the last ``last`` logged values of the ``trace`` column of its ``train_log.csv`` (``last`` = 1: the final
logged value), y = its final ``column`` value in page units. Over all the rows' runs pooled, and over each row's:
Pearson r and Spearman rho, each with its two-sided p-value for zero correlation (``scipy.stats.pearsonr`` /
``spearmanr``), and n; fewer than ``MIN_N`` points, or a constant side, give no number. A claim
``corr(<id>):<stat> > 0`` (or ``< 0``) reads "not significant" when that p-value exceeds ``ALPHA``, else holds /
does not hold by the sign; like every claim it reads "not converged" when a compared row's curve of the column had
not flattened (``repro.tables.curves``) and "stale runs" when a compared row holds stale runs.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.plotting import save_figure
from repro.record import Status, status_of
from repro.tables.curves import State, unconverged
from repro.tables.plan import Records, record_value
from repro.tables.spec import CORR, Claim, Correlation, TableSpec
from repro.tables.traces import TRAIN_LOG, end_value, series

__all__ = ["ALPHA", "MIN_N", "Fit", "Point", "Correlated", "fit", "correlate", "corr_verdict", "correlation_lines",
           "draw_correlation"]

ALPHA = 0.05  # significance level of a correlation claim (two-sided p-value)
MIN_N = 3  # fewest points a correlation is reported for (at 2 any two distinct points give r = ±1)


@dataclass(frozen=True)
class Fit:
    """Pearson r and Spearman rho of n points, each with its two-sided p-value; None where not defined."""

    n: int
    pearson: float | None = None
    pearson_p: float | None = None
    spearman: float | None = None
    spearman_p: float | None = None

    def stat(self, name: str) -> tuple[float | None, float | None]:
        """(coefficient, p-value) of ``name`` (``pearson`` / ``spearman``)."""
        return (self.pearson, self.pearson_p) if name == "pearson" else (self.spearman, self.spearman_p)


def fit(xs: list[float], ys: list[float]) -> Fit:
    """Pearson and Spearman correlation of paired values with two-sided p-values; none below ``MIN_N`` points or
    when either side is constant (the coefficient is 0/0 there)."""
    from scipy import stats  # imported here: `repro tables` and `--help` start without it

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(x) < MIN_N or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Fit(len(x))
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return Fit(len(x), float(pearson.statistic), float(pearson.pvalue), float(spearman.statistic),
               float(spearman.pvalue))


@dataclass(frozen=True)
class Point:
    """One finished run: its row, seed, trace end value (x) and final metric in page units (y)."""

    row: str
    seed: int
    x: float
    y: float


@dataclass(frozen=True)
class Correlated:
    """A spec correlation on the records: its points and the finished runs that gave none (no trace end value
    or no finite metric)."""

    corr: Correlation
    points: list[Point]
    skipped: int

    def fit(self, row: str | None = None) -> Fit:
        """Over the points of ``row``, or of all the correlation's rows pooled (``row`` None)."""
        chosen = [p for p in self.points if row is None or p.row == row]
        return fit([p.x for p in chosen], [p.y for p in chosen])


def correlate(spec: TableSpec, records: Records) -> dict[str, Correlated]:
    """Each of ``spec.correlations`` by id, from the finished runs among ``records``."""
    out = {}
    for corr in spec.correlations:
        scale = spec.column(corr.column).scale
        points, skipped = [], 0
        for run, record in records:
            if run.row.id not in corr.rows or status_of(record) is not Status.FINISHED:
                continue
            x = end_value(series(run.results_dir / TRAIN_LOG, corr.trace), corr.last)
            y = record_value(record, corr.column)
            if x is None or not math.isfinite(x) or not isinstance(y, (int, float)) or not math.isfinite(y):
                skipped += 1
                continue
            points.append(Point(run.row.id, run.seed, x, float(y) * scale))
        out[corr.id] = Correlated(corr, points, skipped)
    return out


def _scope(result: Correlated, row: str | None) -> str:
    return row if row else f"pooled over {', '.join(result.corr.rows)}"


def corr_verdict(claim: Claim, results: dict[str, Correlated], flat: dict[str, dict[str, State | None]] | None,
                 stale_rows: set[str] | frozenset[str]) -> tuple[str, str]:
    """(the compared numbers, "holds" / "does not hold" / "not significant" / "not converged" /
    "convergence undecided" / "convergence not measured" / "stale runs" /
    "not measured") of a claim ``corr(<id>[, <row>]):<stat> <op> 0``."""
    match = CORR.match(str(claim.a))
    result, row, name = results[match["id"]], match["row"], match["stat"]
    measured = result.fit(row)
    value, p = measured.stat(name)
    symbol = "r" if name == "pearson" else "rho"
    number = "—" if value is None else f"{value:.3g} (p = {p:.3g}, n = {measured.n})"
    shown = f"{name} {symbol}({result.corr.id}, {_scope(result, row)}) = {number} {claim.op} 0"
    rows = [row] if row else list(result.corr.rows)
    if value is None:
        return shown, "not measured"
    if any(r in stale_rows for r in rows):
        return shown, "stale runs"
    if flat is not None:
        instead = unconverged([flat.get(r, {}).get(result.corr.column) for r in rows])
        if instead:
            return shown, instead
    if p > ALPHA:
        return shown, "not significant"
    return shown, "holds" if (value > 0 if claim.op == ">" else value < 0) else "does not hold"


def _x_text(corr: Correlation) -> str:
    what = "final logged value" if corr.last == 1 else f"mean of the last {corr.last} logged values"
    return f"{corr.label or corr.trace} ({what})"


def _cells(f: Fit, name: str) -> str:
    value, p = f.stat(name)
    return "—" if value is None else f"{value:.3f} (p = {p:.3g})"


def correlation_lines(spec: TableSpec, results: dict[str, Correlated]) -> list[str]:
    """The page's section: what x and y are, and per correlation a line pooled and one per row."""
    if not results:
        return []
    lines = ["## Correlations across runs", "",
             f"Each finished run is one point. Pearson r and Spearman ρ, each with its two-sided p-value for zero "
             f"correlation (scipy.stats `pearsonr`, `spearmanr`), over the listed rows' runs pooled and over each "
             f"row's runs; — below {MIN_N} runs or when one side is constant. Pooled numbers mix the difference "
             "between rows with the spread within each row; the per-row lines separate the two. Scatter: the "
             "`corr_<id>` figure below (least-squares line over the pooled runs).", "",
             "| correlation | runs | n | Pearson r (p) | Spearman ρ (p) |", "|---|---|---|---|---|"]
    for result in results.values():
        corr = result.corr
        what = f"`{corr.id}`: x = {_x_text(corr)}, y = final {spec.column(corr.column).label}"
        for row in (None, *corr.rows):
            f = result.fit(row)
            runs = f"pooled: {', '.join(spec.row(r).label for r in corr.rows)}" if row is None else spec.row(row).label
            cells = [what if row is None else "", runs, str(f.n), _cells(f, "pearson"), _cells(f, "spearman")]
            lines.append("| " + " | ".join(cells) + " |")
        if result.skipped:
            lines.append(f"| | left out: {result.skipped} finished run(s) without {corr.last} logged trace point(s) "
                         "or a finite metric | | | |")
    return lines + [""]


def draw_correlation(spec: TableSpec, result: Correlated, out: Path) -> Path | None:
    """Scatter of the runs' (trace end value, final metric), one colour per row, each point marked with its seed,
    and the least-squares line over the pooled runs; None without points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not result.points:
        return None
    corr, col = result.corr, spec.column(result.corr.column)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for i, row in enumerate(corr.rows):
        mine = [p for p in result.points if p.row == row]
        if mine:
            r = result.fit(row).pearson
            ax.scatter([p.x for p in mine], [p.y for p in mine], color=f"C{i}", s=22,
                       label=f"{spec.row(row).label} (n={len(mine)}" + ("" if r is None else f", r={r:.2f}") + ")")
            for p in mine:  # the seed beside its point: which runs are the outliers
                ax.annotate(str(p.seed), (p.x, p.y), xytext=(3, 2), textcoords="offset points", fontsize=6,
                            color=f"C{i}")
    xs, ys = np.array([p.x for p in result.points]), np.array([p.y for p in result.points])
    if len(xs) > 1 and np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, ys, 1)
        grid = np.linspace(xs.min(), xs.max(), 2)
        ax.plot(grid, slope * grid + intercept, color="black", lw=1, ls="--", label="least squares, pooled")
    pooled = result.fit()
    summary = "" if pooled.pearson is None else (f"pooled r={pooled.pearson:.2f} (p={pooled.pearson_p:.2g}), "
                                                 f"ρ={pooled.spearman:.2f} (p={pooled.spearman_p:.2g}), n={pooled.n}")
    ax.set(xlabel=_x_text(corr), ylabel=f"final {col.label}")
    ax.legend(fontsize=8)
    ax.set_title(textwrap.fill(f"{spec.name}: {corr.title or corr.id} — {summary or f'n={pooled.n}'}", 70),
                 fontsize=10)
    return save_figure(fig, out)

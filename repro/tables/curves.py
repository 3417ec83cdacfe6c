"""Metric curves of a table: each column against generator updates, and whether each row had flattened.

A run with ``evaluation.curve_points`` records ``curves = {metric: [[step, value], ...]}`` (the last point is
its final value) and ``curve_seconds = [[step, training seconds], ...]``. Per row, the curve is the mean over
the seeds that finished, with a ± sample-std band; the published value and its ± as a horizontal band. A
column with ``curve_x: train_seconds`` is drawn against training wall time instead of generator updates: each
point at the seeds' mean training seconds at that step (evaluation time excluded), so rows whose steps cost
differently are compared at equal time, as in a score-vs-time figure.

Flattening rule (stated on every page that uses it): over the last 20 % of training (points at steps
≥ 0.8 × the final step, at least two of them), the least-squares line through the row's mean curve changes by Δ
from the first to the last of those points, with a standard error over the seeds' own changes (the line through
the mean is the mean of the seeds' lines). Against ``max(5 % of |final mean|, the column's floor)`` (its
``tail_floor``, else its noise floor): flat when
|Δ| + 2 s.e. is within it, moving when |Δ| - 2 s.e. is beyond it, undecided in between, as the length check below
reads its change. The trend is judged, not the range (one dip does not fail a row whose level holds); the seeds'
spread never makes a moving row flat, only undecided (a tail of a few evaluation points through noisy seeds can
say neither). A claim about a row whose curve did not flatten is reported as "not converged" (undecided:
"convergence undecided"), not as holds / does not hold.

Length check (where it decides instead). Under a schedule tied to the length (a learning rate decaying to 0 at the
last update: ``GANModule.LENGTH_DEPENDENT``) the last 20 % is the annealing stretch at any length, so a rising tail
says nothing about the length. Where such a row's finished runs all hold their settings' finished run at a shorter
length, retrained from scratch (``shorter_runs``: ``repro.tables.extend.length_history``), the row is judged by its
final values instead: the mean final at its length against the mean final at the longest shorter length all its
runs hold, with the same tolerance, and with the change's standard error over the seeds' own changes (two lengths
are two trainings, so unlike the tail trend the seeds' spread enters), read as the claims read their sides:
converged when the change lies within the tolerance by two standard errors (|Δ| + 2 s.e. <= tolerance), not
converged when it lies beyond it by two (|Δ| - 2 s.e. > tolerance), and undecided in between (the seeds cannot tell; more seeds decide, and the page
estimates how many: ``Trend.seeds_to_decide``). The tail trend is still shown beside it. A row whose schedule is
not tied to its length is judged by its tail, whatever shorter runs it holds (a run ten times shorter says only that
it was too short), and a length check it has is shown beside the tail trend.
"""
from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from repro.plotting import save_figure
from repro.record import CURVE_TAIL, Status, read_json, status_of
from repro.tables.extend import SHORTER_RUNS, length_dependence
from repro.tables.jobs import job_folders
from repro.tables.plan import Records, Run
from repro.tables.spec import Column, Row, TableSpec
from repro.tables.traces import column_series, curve_points

__all__ = ["RowCurve", "Trend", "State", "LengthCurve", "row_curves", "trend", "length_check", "length_curve", "flattened",
           "tied_to_length", "trends", "states", "convergence", "unconverged", "draw_curves", "draw_length_curves",
           "in_progress", "peak_state", "peak_states", "TAIL", "REL_TOL", "RULE", "PEAK_RULE", "X_LABELS"]

TAIL, REL_TOL = CURVE_TAIL, 0.05
X_LABELS = {"step": "generator updates",
            "train_seconds": "training wall time (s; mean over seeds, evaluation excluded)"}
RULE = ("a row's metric has flattened when, over the last 20% of training (at least two evaluation points), the "
        "least-squares line through its mean over seeds changes by at most max(5% of the final mean, the column's "
        "floor: its evaluation noise where the spec states one, else its noise floor) by two standard errors, the "
        "change's standard error taken over the seeds' own tail changes; "
        "it has not flattened when the change exceeds that tolerance by two standard errors, and is undecided in "
        "between (the trend, not the range, is judged; the seeds' spread never makes a moving row flat, only "
        "undecided); Δ below is that change in the page's units. Where the row's schedule is tied to its length (a learning rate decaying to 0 makes "
        "the tail an annealing stretch at any length) and it was also trained at a shorter length from scratch, the "
        "length check decides instead: its mean final value against the shorter runs' mean final, by the same "
        "tolerance and the change's standard error over the seeds: converged when |Δ| + 2 s.e. is within the "
        "tolerance, not converged when |Δ| - 2 s.e. is beyond it, undecided in between; on other rows a length "
        "check is shown beside the tail trend, which decides")

PEAK_RULE = ("a claim's statistic \"peak\" is each seed's best point on its curve of the column (the score an early "
             "stop at the best evaluation keeps; chosen on the evaluation metric itself, so optimistic by selection), "
             "averaged over seeds; it counts as converged when the row's mean curve is no longer improving over the "
             "last 20% of training (its least-squares change there, plus two standard errors over the seeds' own "
             "changes, is no improvement beyond the flattening tolerance: flat, or past its peak; undecided while "
             "two standard errors straddle it)")


@dataclass(frozen=True)
class RowCurve:
    """Mean ± std over seeds at each evaluation step common to the row's finished runs."""

    steps: list[int]
    mean: list[float]
    std: list[float]
    finals: list[float]  # each seed's final value
    seconds: list[float] | None = None  # mean training seconds at each step; None unless every run recorded them
    seeds: list[list[float]] = field(default_factory=list)  # each seed's value at each step (empty: not given)


def _finished(spec: TableSpec, records: Records) -> dict[str, list[tuple[Run, dict[str, Any]]]]:
    out: dict[str, list[tuple[Run, dict[str, Any]]]] = {r.id: [] for r in spec.rows}
    for run, record in records:
        if status_of(record) is Status.FINISHED:
            out[run.row.id].append((run, record))
    return out


def _column_records(finished: list[tuple[Run, dict[str, Any]]], col: Column) -> list[dict[str, Any]]:
    """A row's finished records as ``row_curves`` reads them for ``col``: as they are, or for a trace column
    (``Column.trace_last``) each run's logged series as its curve (no final metrics, so no length check)."""
    if not col.trace_last:
        return [record for _, record in finished]
    return [{"curves": {col.key: [[s, v] for s, v in column_series(run, col).items()]}} for run, _ in finished]


def row_curves(records: list[dict[str, Any]], key: str) -> RowCurve | None:
    """The row curve of metric ``key`` from its runs' records (None when no run has a finite curve for it)."""
    series, clocks = [], []
    for record in records:
        points = curve_points(record, key)
        if points:
            series.append(points)
            clocks.append({int(s): float(t) for s, t in record.get("curve_seconds") or []})
    if not series:
        return None
    steps = sorted(set.intersection(*(set(p) for p in series)))
    if not steps:
        return None
    mean = [statistics.fmean(p[s] for p in series) for s in steps]
    std = [statistics.stdev(p[s] for p in series) if len(series) > 1 else 0.0 for s in steps]
    timed = all(s in c for c in clocks for s in steps)
    seconds = [statistics.fmean(c[s] for c in clocks) for s in steps] if timed else None
    return RowCurve(steps, mean, std, [p[steps[-1]] for p in series], seconds, [[p[s] for s in steps] for p in series])


State = Literal["flat", "moving", "undecided"]


@dataclass(frozen=True)
class Trend:
    """A row's metric over the last ``TAIL`` of training: the least-squares ``change`` and the ``tolerance`` it is
    held to (both in the metric's recorded units)."""

    change: float
    tolerance: float
    from_steps: int | None = None  # set: a length check, final at ``to_steps`` against the shorter runs' final here
    to_steps: int | None = None
    beside: "Trend | None" = None  # the row's other judgement, shown, not deciding (a length check's tail trend, or
    # the length check of a row whose schedule is not tied to its length)
    se: float | None = None  # the change's standard error over the seeds' own changes (None: fewer than 2 seeds)
    n: int | None = None  # the number of seeds it is taken over

    @property
    def state(self) -> State:
        """"flat" / "moving" by the tolerance and two standard errors either way, "undecided" where the change is
        within two standard errors of the tolerance (without a standard error, by the tolerance alone)."""
        spread = 0.0 if self.se is None else 2 * self.se
        if abs(self.change) + spread <= self.tolerance:
            return "flat"
        return "moving" if abs(self.change) - spread > self.tolerance else "undecided"

    @property
    def flat(self) -> bool:
        return self.state == "flat"

    @property
    def seeds_to_decide(self) -> int | None:
        """How many seeds an undecided row would need for two standard errors to clear the tolerance one
        way or the other, were the change and the seeds' spread (s.e. x sqrt(n)) to stay as measured; None when not
        undecided or when the change equals the tolerance (no number of seeds decides it)."""
        gap = abs(abs(self.change) - self.tolerance)
        if self.state != "undecided" or not self.se or not self.n or gap == 0:
            return None
        return math.ceil(self.n * (2 * self.se / gap) ** 2)


def trend(curve: RowCurve, floor: float = 0.0, tail: float = TAIL, rel_tol: float = REL_TOL) -> Trend | None:
    """The module's flattening rule on one curve (``floor``: the column's ``flat_floor`` in recorded units): the change
    of the least-squares line through the mean over the tail, with its standard error over the seeds' own tail
    changes where the curve holds two or more seeds (the mean's slope is the mean of theirs: the fit is linear in
    the values); None when fewer than two points fall in the last ``tail`` of training."""
    start = (1.0 - tail) * curve.steps[-1]
    window = [i for i, s in enumerate(curve.steps) if s >= start]
    if len(window) < 2:
        return None
    steps = [curve.steps[i] for i in window]

    def change(values: list[float]) -> float:
        return statistics.linear_regression(steps, [values[i] for i in window]).slope * (steps[-1] - steps[0])

    own = [change(values) for values in curve.seeds]
    se = statistics.stdev(own) / math.sqrt(len(own)) if len(own) > 1 else None
    return Trend(change(curve.mean), max(rel_tol * abs(curve.mean[-1]), floor), se=se, n=len(own) or None)


def _final(record: dict[str, Any], key: str) -> float | None:
    value = (record.get("metrics") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def length_check(records: list[dict[str, Any]], key: str, floor: float = 0.0, rel_tol: float = REL_TOL
                 ) -> Trend | None:
    """The length check of a row's finished ``records`` on metric ``key``: the change of the mean final value from
    the longest shorter length every run holds in ``shorter_runs`` to the runs' own (with its standard error over
    the runs' own changes, shown beside it: the two lengths are separate trainings, so the seeds' spread enters);
    None unless every run has a finite final at both lengths and all ran the same length."""
    lengths = [{h["generator_steps"]: h for h in r.get(SHORTER_RUNS) or []} for r in records]
    common = set.intersection(*(set(h) for h in lengths)) if lengths else set()
    lengths_run = {r.get("generator_steps") for r in records}
    to_steps = lengths_run.pop() if len(lengths_run) == 1 else None  # None: runs of several lengths
    common = {s for s in common if isinstance(to_steps, int) and s < to_steps}
    if not common:
        return None
    at = max(common)
    now = [_final(r, key) for r in records]
    before = [_final(h[at], key) for h in lengths]
    if any(v is None for v in now + before):
        return None
    mean_now = statistics.fmean(now)  # type: ignore[arg-type]
    paired = [a - b for a, b in zip(now, before)]  # type: ignore[operator]
    se = statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else None
    return Trend(mean_now - statistics.fmean(before), max(rel_tol * abs(mean_now), floor),  # type: ignore[arg-type]
                 from_steps=at, to_steps=to_steps, se=se, n=len(paired))


def flattened(curve: RowCurve, floor: float = 0.0, tail: float = TAIL, rel_tol: float = REL_TOL) -> bool | None:
    """True / False by the module's rule; None when fewer than two points fall in the last ``tail`` of training."""
    result = trend(curve, floor, tail, rel_tol)
    return None if result is None else result.flat


def tied_to_length(records: list[dict[str, Any]]) -> bool:
    """Whether any of a row's records trained under a schedule tied to its length (``length_dependence`` of its
    config); a record without a config counts as tied (nothing says otherwise)."""
    return any(not isinstance((r.get("config") or {}).get("model"), dict) or length_dependence(r["config"])
               for r in records)


def trends(spec: TableSpec, records: Records) -> dict[str, dict[str, Trend | None]]:
    """``out[row_id][column_key]``: the row's judgement by the rule, None where the row has none: its length check
    (holding its tail trend beside it) where it has one and its schedule is tied to its length, else its tail trend
    (holding any length check beside it)."""
    finished = _finished(spec, records)
    out: dict[str, dict[str, Trend | None]] = {}
    for row in spec.rows:
        out[row.id] = {}
        tied = tied_to_length([record for _, record in finished[row.id]])
        for col in spec.columns:
            floor = col.flat_floor / col.scale
            of_col = _column_records(finished[row.id], col)
            curve = row_curves(of_col, col.key)
            tail = trend(curve, floor) if curve else None
            check = length_check(of_col, col.key, floor)
            if check is not None and (tied or tail is None):
                out[row.id][col.key] = replace(check, beside=tail)
            else:
                out[row.id][col.key] = tail if tail is None else replace(tail, beside=check)
    return out


def states(trend_table: dict[str, dict[str, Trend | None]]) -> dict[str, dict[str, State | None]]:
    """``trends``' table as ``state[row_id][column_key]`` (``Trend.state``), None where there is no trend."""
    return {row: {key: None if t is None else t.state for key, t in cols.items()} for row, cols in trend_table.items()}


def convergence(spec: TableSpec, records: Records) -> dict[str, dict[str, State | None]]:
    """``state[row_id][column_key]`` by the rule, None where the row has no curve."""
    return states(trends(spec, records))


def peak_state(judged: Trend | None, better: str) -> State | None:
    """Whether a row's peak is settled (``PEAK_RULE``): "moving" while the tail trend of its mean curve improves by
    more than the tolerance in the ``better`` direction by two standard errors, "flat" while it improves by less by
    two (flat, or falling back from its peak), else "undecided"; None without a tail trend. ``judged`` is the row's entry of ``trends`` (a length check holds its tail in ``beside``)."""
    tail = judged if judged is None or judged.from_steps is None else judged.beside
    if tail is None:
        return None
    gain, spread = tail.change if better == "higher" else -tail.change, 2 * (tail.se or 0.0)
    return "moving" if gain - spread > tail.tolerance else "flat" if gain + spread <= tail.tolerance else "undecided"


def peak_states(spec: TableSpec, trend_table: dict[str, dict[str, Trend | None]]
                ) -> dict[str, dict[str, State | None]]:
    """``state[row_id][column_key]`` of each row's peak (``peak_state``) for the columns that say which way is better."""
    return {row: {c.key: peak_state(cols.get(c.key), c.better) for c in spec.columns if c.better}
            for row, cols in trend_table.items()}


def unconverged(compared: list[State | None]) -> str | None:
    """The verdict a claim gets instead of holds / does not hold when a compared row's column is not converged:
    "not converged", "convergence undecided", "convergence not measured" (no curve or too few points), else None."""
    if "moving" in compared:
        return "not converged"
    if "undecided" in compared:
        return "convergence undecided"
    return "convergence not measured" if None in compared else None


def _facets(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows split by the data set they override (``data.dataset``), in order of first appearance; one facet when
    they all train on the same data."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(str(row.overrides.get("data.dataset", "")), []).append(row)
    return list(out.items())


def _panels(spec: TableSpec, columns: list[Column]) -> tuple[Any, Any, list[tuple[str, list[Row]]], list[Any], int]:
    """A figure with one panel per column and one line of panels per data set (``_facets``): the figure, its axes,
    the facets, the row colours and the most rows in a facet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    facets = _facets(list(spec.rows))
    most = max(len(rows) for _, rows in facets)
    fig, axes = plt.subplots(len(facets), len(columns), figsize=(4.2 * len(columns) + (2.2 if most > 6 else 0),
                                                                  max(3.4, 0.16 * most + 1.2) * len(facets)),
                             squeeze=False, dpi=100)
    colours = plt.get_cmap("tab20").colors if most > 10 else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return fig, axes, facets, list(colours), most


def _save_panels(fig: Any, axes: Any, facets: list[tuple[str, list[Row]]], columns: list[Column], most: int,
                 title: str, out: Path) -> Path:
    """Panel titles, legends beside each line of panels (or in its first panel), the title; saved to ``out``."""
    for line, (data, _) in zip(axes, facets):
        for ax, col in zip(line, columns):
            ax.set_title(f"{col.label} · {data}" if data and len(facets) > 1 else col.label, fontsize=9)
            ax.tick_params(labelsize=7)
        if most > 6:
            line[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        else:
            line[0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 55 * len(columns)), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, out)


def _by_row(spec: TableSpec, records: Records, of: Any) -> tuple[dict[str, dict[str, Any]], list[Column]]:
    """``of(finished records of a row, column key)`` for every column and row, and the columns where some row has one."""
    finished = _finished(spec, records)
    found = {col.key: {row.id: of(_column_records(finished[row.id], col), col.key) for row in spec.rows}
             for col in spec.columns}
    return found, [col for col in spec.columns if any(found[col.key].values())]


def draw_curves(spec: TableSpec, records: Records, out: Path) -> Path | None:
    """One panel per column that has curves (not, e.g., a run-record column such as ``train_seconds``), one line of
    panels per data set when the rows train on several (``data.dataset`` overrides): each row's mean curve with a
    ± std band, published value ± its spread dashed; the legend of each line of panels beside it."""
    curves, columns = _by_row(spec, records, row_curves)
    if not columns:
        return None
    fig, axes, facets, colours, most = _panels(spec, columns)
    for line, (_, rows) in zip(axes, facets):
        for ax, col in zip(line, columns):
            for i, row in enumerate(rows):
                curve = curves[col.key][row.id]
                x = None if curve is None else curve.seconds if col.curve_x == "train_seconds" else curve.steps
                if x is None:  # no curve, or a run without curve_seconds: no time axis for this row
                    continue
                colour = colours[i % len(colours)]
                mean = [m * col.scale for m in curve.mean]
                low = [(m - s) * col.scale for m, s in zip(curve.mean, curve.std)]
                high = [(m + s) * col.scale for m, s in zip(curve.mean, curve.std)]
                ax.plot(x, mean, color=colour, lw=1.4, marker="o", ms=2.5, label=f"{row.label} (n={len(curve.finals)})")
                ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
                published = row.published.get(col.key)
                band = published.number() if published else None
                if band:
                    value, spread = band
                    ax.axhline(value, color=colour, ls="--", lw=1)
                    if spread:
                        ax.axhspan(value - spread, value + spread, color=colour, alpha=0.08)
            ax.set_xlabel(X_LABELS[col.curve_x], fontsize=8)
    title = f"{spec.name}: metrics through training (mean ± std over seeds; dashed: paper ± its spread)"
    return _save_panels(fig, axes, facets, columns, most, title, out)


@dataclass(frozen=True)
class LengthCurve:
    """A row's final value at each length its finished runs were trained to from scratch (their own length and
    their ``shorter_runs``): mean and standard error over the seeds that hold each length, and how many do."""

    steps: list[int]
    mean: list[float]
    se: list[float]  # 0 where one seed holds the length
    n: list[int]


def length_curve(records: list[dict[str, Any]], key: str) -> LengthCurve | None:
    """The row's final ``key`` against training length; None unless its runs hold at least two lengths."""
    by_length: dict[int, list[float]] = {}
    for record in records:
        for run in [*(record.get(SHORTER_RUNS) or []), record]:
            steps, value = run.get("generator_steps"), _final(run, key)
            if isinstance(steps, int) and value is not None:
                by_length.setdefault(steps, []).append(value)
    if len(by_length) < 2:
        return None
    lengths = sorted(by_length)
    values = [by_length[s] for s in lengths]
    return LengthCurve(lengths, [statistics.fmean(v) for v in values],
                       [statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values],
                       [len(v) for v in values])


def draw_length_curves(spec: TableSpec, records: Records, out: Path) -> Path | None:
    """The length check drawn: per column and data set, each row's mean final value (± s.e. over seeds) against the
    length it was trained to from scratch, on a log2 axis; None when no row holds two lengths."""
    found, columns = _by_row(spec, records, length_curve)
    if not columns:
        return None
    from matplotlib.ticker import FuncFormatter, NullLocator

    fig, axes, facets, colours, most = _panels(spec, columns)
    for line, (_, rows) in zip(axes, facets):
        for ax, col in zip(line, columns):
            lengths: set[int] = set()
            for i, row in enumerate(rows):
                curve = found[col.key][row.id]
                if curve is None:
                    continue
                lengths.update(curve.steps)
                ax.errorbar(curve.steps, [m * col.scale for m in curve.mean], yerr=[s * col.scale for s in curve.se],
                            color=colours[i % len(colours)], lw=1.2, marker="o", ms=3, capsize=2,
                            label=f"{row.label} (n={max(curve.n)})")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(lengths))  # the lengths run, labelled as numbers of updates
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("training length (generator updates; each length trained from scratch)", fontsize=8)
    title = (f"{spec.name}: final value against training length (mean ± s.e. over the seeds holding each length; "
             "the length check compares the last two points)")
    return _save_panels(fig, axes, facets, columns, most, title, out)


def in_progress(records: Records) -> list[tuple[str, int | None, int | None]]:
    """Runs with a checkpoint under way, their own or their ensemble job's (``repro.tables.jobs``): (run name,
    generator updates done, updates asked). A finished run has one while it is retrained (``--rerun-stale``) or
    extended; its finished record counts until then."""
    out = []
    for run, record in records:
        folders = [run.results_dir, *(f for seeds, f in job_folders(run.spec, run.row).items() if run.seed in seeds)]
        progress = next((p for p in (read_json(f / "in_progress" / "progress.json") for f in folders) if p), None)
        if progress is not None:
            out.append((run.name, progress.get("generator_steps"), progress.get("max_steps")))
    return out

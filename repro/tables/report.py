"""Aggregation: a table's run records → ``paper_tables/<name>.md`` + ``.csv`` + figure panels.

Each cell is the mean ± sample std over independently trained seeds (not the evaluation noise of one
model), with n; diverged and failed runs are counted beside it, never averaged in. A single run shows its
value alone (no spread), and where the paper's column states standard errors ours are standard errors
too (std / sqrt(n)). Published numbers sit beside ours with their source, and a column with a ``reproduction`` rule
says of each whether it was reproduced (``repro.tables.reproduction``). Claims are checked in the
page's units, with ``best(<group>)`` found from the data and a verdict "within noise" when the two sides
differ by no more than the column's noise floor or, for means, two combined standard errors over the seeds; a spec's ``correlations`` add a section and scatter figures
(``repro.tables.correlate``), its ``traces`` figures of logged series (``repro.tables.traces``). The page is a
pure function of the spec and the records, so regenerating it without new runs rewrites the same bytes.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

from repro.plotting import save_figure
from repro.record import DONE, RECORD_FILE, TIMED_FIELDS, Status, status_of
from repro.tables.compute import compute_line, describe_machine
from repro.tables.cell import Cell
from repro.tables.correlate import ALPHA, Correlated, corr_verdict, correlate, correlation_lines, draw_correlation
from repro.tables.curves import (PEAK_RULE, RULE, State, Trend, draw_curves, draw_length_curves, in_progress,
                                 peak_states, states, trends, unconverged)
from repro.tables.extend import FINAL_STATE
from repro.tables.plan import Records, Run, read_records
from repro.tables.reproduction import reproduction_lines
from repro.tables.spec import BEST, CORR, Claim, Column, Row, TableSpec
from repro.tables.traces import column_curve, column_value, draw_trace

__all__ = ["Cell", "aggregate", "write_report", "claim_verdict", "unreported_columns", "summary_table"]

SEEDS_SHOWN = 1_000  # beyond this, "seeds would decide" is shown as "more than": the change sits on the tolerance


def aggregate(spec: TableSpec, records: Records | None = None) -> dict[str, dict[str, Cell]]:
    """``cells[row_id][column_key]`` over the spec's seeds, from the run records (``results/<table>/<row>/seed<k>/``)."""
    records = read_records(spec) if records is None else records
    cells: dict[str, dict[str, Cell]] = {r.id: {c.key: Cell() for c in spec.columns} for r in spec.rows}
    for run, record in records:
        status = status_of(record)
        for col in spec.columns:
            cell = cells[run.row.id][col.key]
            if status is Status.FINISHED:
                value = column_value(run, record, col)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    cell.values.append(float(value))
                    if col.key in TIMED_FIELDS:
                        cell.machines.add(describe_machine(record.get("machine")))
                    _add_peak(cell, column_curve(run, record, col), col)
                elif value is not None:
                    cell.nonfinite += 1
                else:
                    cell.unreported += 1
            elif status is Status.DIVERGED:
                cell.diverged += 1
            elif status in (Status.FAILED, Status.STOPPED):  # stopped short of its length: not a result
                cell.failed += 1
            else:
                cell.missing += 1
    return cells


def _add_peak(cell: Cell, curve: dict[int, float], col: Column) -> None:
    """Append the best point of one run's curve (``col.better`` says which way) to ``cell.peaks``; nothing without
    a curve or a direction."""
    if curve and col.better:
        step = (min if col.better == "lower" else max)(curve, key=curve.__getitem__)
        cell.peaks.append(curve[step])
        cell.peak_steps.append(step)


def unreported_columns(spec: TableSpec, records: Records | None = None) -> dict[str, list[str]]:
    """Columns that no finished run reports, each with the metric keys the runs do report (a column whose
    metric the configured evaluation does not run shows up here instead of as a silently empty column);
    empty until some run has finished."""
    records = read_records(spec) if records is None else records
    finished = [(run, r) for run, r in records if status_of(r) is Status.FINISHED]
    if not finished:
        return {}
    reported = {key for _, record in finished for key in (record.get("metrics") or {})}
    return {c.key: sorted(reported) for c in spec.columns
            if all(column_value(run, record, c) is None for run, record in finished)}


def _relative_cell(cell: Cell, ref: Cell) -> Cell:
    """Values divided by the reference row's mean (e.g. wall time relative to the plain GAN)."""
    out = Cell(nonfinite=cell.nonfinite, diverged=cell.diverged, failed=cell.failed, missing=cell.missing,
               unreported=cell.unreported, machines=cell.machines | ref.machines)
    if ref.mean:
        out.values = [v / ref.mean for v in cell.values]
    else:
        out.missing += len(cell.values)
    return out


def _display_cells(spec: TableSpec, cells: dict[str, dict[str, Cell]]) -> dict[str, dict[str, Cell]]:
    return {row.id: {c.key: _relative_cell(cells[row.id][c.key], cells[c.relative_to][c.key]) if c.relative_to
                     else cells[row.id][c.key] for c in spec.columns} for row in spec.rows}


def _fmt(value: float, col: Column) -> str:
    return format(value * col.scale, col.format)


def format_cell(cell: Cell, col: Column) -> str:
    """``mean ± spread (n=k)`` (the column's statistic; a single run: its value, no ±) plus counts of
    diverged / failed / non-finite / missing runs, and for a clock time taken on more than one kind of machine, how
    many kinds."""
    counts = ", ".join([f"{k} {label}" for k, label in ((cell.diverged, "diverged"), (cell.failed, "failed"),
                                                           (cell.nonfinite, "non-finite"), (cell.missing, "not run"),
                                                           (cell.unreported, "not reported")) if k]
                       + ([f"timed on {len(cell.machines)} kinds of machine"] if len(cell.machines) > 1 else []))
    if not cell.n:
        return f"— ({counts})" if counts else "—"
    spread = cell.spread(col)
    value = _fmt(cell.mean, col) + ("" if spread is None else f" ± {_fmt(spread, col)}")
    return f"{value} (n={cell.n}{'; ' + counts if counts else ''})"


def best_row(spec: TableSpec, group: str, col: Column, cells: dict[str, dict[str, Cell]]) -> str | None:
    """The row of ``group`` with the best mean of ``col`` (lowest or highest, per ``col.better``); None if none ran."""
    ran = [r.id for r in spec.rows if r.group == group and cells[r.id][col.key].n]
    if not ran:
        return None
    pick = min if col.better == "lower" else max
    return pick(ran, key=lambda row: cells[row][col.key].mean)


def _stat(claim: Claim) -> str | None:
    """The statistic both sides of the claim compare (a constant side takes the other's), or None if they differ."""
    stats = {str(ref).split(":")[2] for ref in (claim.a, claim.b) if not isinstance(ref, float)}
    return stats.pop() if len(stats) == 1 else None


def _means(claim: Claim) -> bool:
    """Whether the claim compares means over seeds (of final values or of peaks), or one with a constant."""
    return _stat(claim) in ("mean", "peak")


def _stat_error(cell: Cell, stat: str | None) -> float | None:
    """The standard error of a cell's ``mean`` or ``peak`` (std / sqrt(n) of the seeds' values) or ``std``
    (std / sqrt(2 (n - 1)), the normal-theory error of a sample std); None for another statistic or fewer than two
    seeds."""
    if stat == "peak":
        return statistics.stdev(cell.peaks) / math.sqrt(len(cell.peaks)) if len(cell.peaks) > 1 else None
    if cell.n < 2 or cell.std is None:
        return None
    return {"mean": cell.se, "std": cell.std / math.sqrt(2 * (cell.n - 1))}.get(stat or "")


def _seed_noise(claim: Claim, cells: dict[str, dict[str, Cell]], spec: TableSpec,
                compared: list[tuple[str, str, str]]) -> float | None:
    """Two combined standard errors over seeds (page units) of a claim comparing means or stds (a constant has
    none); None when the sides compare other or different statistics or a side has fewer than two seeds."""
    errors = [(_stat_error(cells[row][key], _stat(claim)), spec.column(key).scale) for row, key, _ in compared]
    if not errors or any(e is None for e, _ in errors):
        return None
    return 2 * math.hypot(*(e * scale for e, scale in errors))  # type: ignore[operator]


def claim_verdict(claim: Claim, cells: dict[str, dict[str, Cell]], spec: TableSpec,
                  flat: dict[str, dict[str, State | None]] | None = None,
                  stale_rows: set[str] | frozenset[str] = frozenset(),
                  correlations: dict[str, Correlated] | None = None,
                  peaked: dict[str, dict[str, State | None]] | None = None) -> tuple[str, str]:
    """(the compared numbers, "holds" / "does not hold" / "within noise" / "not converged" / "convergence
    undecided" / "convergence not measured" / "stale runs" / "not measured"), compared in the page's units (a column's ``scale`` applied). "stale runs" when a row it
    compares holds runs trained with other settings than the spec's now (``stale_rows``: such a comparison may set
    runs of different lengths side by side); "not converged" when a row it compares has a metric curve that had not
    flattened (``repro.tables.curves``), "convergence undecided" when its length check's change is within two
    standard errors of the tolerance, "convergence not measured" when one has no curve to judge it by (none
    recorded, or too few points in the last 20 %; ``flat`` None, or a claim with ``any_length``, skips the check); "within noise" when the sides differ by no more than the noise floor of the
    claim's column, or, for means and stds, by no more than two combined standard errors over the seeds; "one seed" when a
    compared mean rests on a single run (its seed spread unmeasured). A claim on a correlation (``corr(<id>):<stat>``) is judged by ``repro.tables.correlate``
    (its verdict may be "not significant"), on ``correlations`` (read from the records when not given). A ``peak``
    side (each seed's best curve point, averaged) is judged converged by ``peaked`` (``curves.peak_states``) instead
    of ``flat``."""
    if CORR.match(str(claim.a)):
        results = correlate(spec, read_records(spec)) if correlations is None else correlations
        return corr_verdict(claim, results, flat, stale_rows)
    compared: list[tuple[str, str, str]] = []  # (row, column, stat) of each side, best(<group>) resolved

    def resolve(ref: str | float) -> tuple[float | None, str, Column | None]:
        if isinstance(ref, float):
            return ref, f"{ref:g}", None
        row, key, stat = ref.split(":")
        col = spec.column(key)
        best = BEST.match(row)
        shown_row = row
        if best:
            row = best_row(spec, best["group"], col, cells) or ""
            shown_row = f"{row or '—'}, the best of {best['group']}"
        compared.append((row, key, stat))
        value = cells[row][key].stat(stat) if row else None
        value = None if value is None else value * col.scale
        where = ""
        if stat == "peak" and value is not None:
            where = f" (seeds' best at step {'/'.join(f'{s:,}' for s in cells[row][key].peak_steps)})"
        return value, f"{stat}({shown_row}, {key}) = {'—' if value is None else format(value, '.3g')}{where}", col

    (a, a_text, col_a), (b, b_text, col_b) = resolve(claim.a), resolve(claim.b)
    floor = (col_a or col_b).noise_floor if (col_a or col_b) else 0.0
    shown = f"{a_text} {claim.op} {b_text}" + (f" (noise floor {floor:g})" if floor else "")
    if a is None or b is None:
        return shown, "not measured"
    if any(row in stale_rows for row, _, _ in compared):
        return shown, "stale runs"
    if flat is not None and not claim.any_length:
        instead = unconverged([((peaked or {}) if stat == "peak" else flat).get(row, {}).get(col)
                               for row, col, stat in compared])
        if instead:
            return shown, instead
    if claim.op == "~":  # the two means agree within 2 combined standard errors (Cell.se over seeds)
        (row_a, key_a, _), (row_b, key_b, _) = compared
        se_a, se_b = cells[row_a][key_a].se, cells[row_b][key_b].se
        if se_a is None or se_b is None:
            return shown, "not measured"
        bound = 2 * math.hypot(se_a * col_a.scale, se_b * col_b.scale)
        return f"{shown} (difference {abs(a - b):.3g}; 2 combined s.e. {bound:.3g})", (
            "holds" if abs(a - b) <= bound else "does not hold")
    if floor and abs(a - b) <= floor:
        return shown, "within noise"
    if _means(claim) and any(cells[row][key].count(stat) < 2 for row, key, stat in compared):
        return shown, "one seed"
    bound = _seed_noise(claim, cells, spec, compared)
    if bound is not None and abs(a - b) <= bound:
        return f"{shown} (difference {abs(a - b):.3g}; 2 combined s.e. {bound:.3g})", "within noise"
    holds = a < b if claim.op == "<" else a > b
    return shown, "holds" if holds else "does not hold"


def _panel(spec: TableSpec, image: str, title: str, group: str, rows: list[Row], out: Path) -> Path | None:
    """Grid of each run's image: one line per row of the group, one column per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {(r.id, s): Run(spec, r, s).results_dir / image for r in rows for s in spec.seeds_of(r)}
    if not any(p.exists() for p in paths.values()):
        return None
    ncols = max(len(spec.seeds_of(r)) for r in rows)  # a row with fewer seeds leaves its last cells empty
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.6 * len(rows)), squeeze=False, dpi=100)
    for i, r in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(spec.seeds_of(r)):
                ax.axis("off")
                continue
            s = spec.seeds_of(r)[j]
            if paths[(r.id, s)].exists():
                ax.imshow(plt.imread(paths[(r.id, s)]))
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center")
            ax.set_title(f"{r.label}, seed {s}", fontsize=8)
    width = int(32 * ncols)  # characters of a 10 pt title that fit over 2.6 inches per column
    fig.suptitle(textwrap.fill(f"{spec.name}: {title or image} — {group}", width), fontsize=10)
    return save_figure(fig, out)


def _chart(spec: TableSpec, col: Column, cells: dict[str, dict[str, Cell]], out: Path) -> Path | None:
    """Bar chart of one column: mean per row with the column's spread over seeds (s.e. or std; no bar for a
    single run; n in the label); None if nothing ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in spec.rows if cells[r.id][col.key].n]
    if not rows:
        return None
    means = [cells[r.id][col.key].mean * col.scale for r in rows]
    spreads = [(cells[r.id][col.key].spread(col) or 0.0) * col.scale for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2), dpi=100)
    ax.barh(range(len(rows)), means, xerr=spreads if any(spreads) else None, color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r.label} (n={cells[r.id][col.key].n})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(col.label + (f" (relative to {col.relative_to})" if col.relative_to else ""))
    if col.relative_to:
        ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    several = [cells[r.id][col.key].n for r in rows if cells[r.id][col.key].n > 1]
    what = f"mean ± {col.stat_name} over seeds" if several else "one run per row (no spread)"
    if several and len(several) < len(rows):
        what += "; rows with n=1 have no bar"
    ax.set_title(textwrap.fill(f"{spec.name}: {col.label}, {what}", 80), fontsize=10)
    return save_figure(fig, out)


def _csv(spec: TableSpec, cells: dict[str, dict[str, Cell]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "label", "column", "published", "published_source", "mean", "std", "se", "n",
                     "diverged", "failed", "nonfinite", "not_run", "relative_to", "not_reported"])
    for row in spec.rows:
        for col in spec.columns:
            cell, pub = cells[row.id][col.key], row.published.get(col.key)
            writer.writerow([row.id, row.label, col.key, pub.value if pub else "", pub.source if pub else "",
                             "" if cell.mean is None else repr(cell.mean * col.scale),
                             "" if cell.std is None else repr(cell.std * col.scale),
                             "" if cell.se is None else repr(cell.se * col.scale), cell.n, cell.diverged,
                             cell.failed, cell.nonfinite, cell.missing, col.relative_to, cell.unreported])
    return buf.getvalue()


def _status_line(spec: TableSpec, records: Records) -> str:
    """How many of the table's runs exist, by status: a page never hides that a table was only partly run."""
    statuses = [status_of(r) for _, r in records]
    done = {s: statuses.count(s) for s in Status}
    running = {name for name, _, _ in in_progress(records)}
    started = sum(1 for (run, _), s in zip(records, statuses) if s is None and run.name in running)
    again = sum(1 for (run, _), s in zip(records, statuses) if s in DONE and run.name in running)
    missing = len(statuses) - sum(done.values()) - started
    text = (f"{done[Status.FINISHED]} of {len(statuses)} finished, {done[Status.DIVERGED]} diverged, "
            f"{done[Status.FAILED]} failed" + (f", {done[Status.STOPPED]} stopped short of their length"
                                               if done[Status.STOPPED] else ""))
    text += (f"; {again} of the finished or diverged being trained again (retrained or extended; their records "
             "count until they end)" if again else "")
    text += f"; {started} in progress" if started else ""
    return text + (f"; {missing} not run yet (`repro reproduce {spec.name}` runs them)." if missing else ".")


def _convergence_lines(spec: TableSpec, trend_table: dict[str, dict[str, Trend | None]]) -> list[str]:
    if not any(t is not None for row in trend_table.values() for t in row.values()):
        return []

    def number(value: float, col: Column, sign: str = "") -> str:
        """In the column's format, or to one significant digit where that format rounds a non-zero value to 0."""
        text = f"{value * col.scale:{sign}{col.format}}"
        return text if value == 0 or float(text.replace(",", "")) != 0 else f"{value * col.scale:{sign}.1g}"

    def cell(t: Trend | None, col: Column) -> str:
        if t is None:
            return "—"
        delta = f"Δ {number(t.change, col, '+')}" + ("" if t.se is None else f" ± {number(t.se, col)} s.e.")
        tolerance = f"tolerance {number(t.tolerance, col)}" + (
            "" if t.seeds_to_decide is None else f"; ~{t.seeds_to_decide:,} seeds would decide"
            if t.seeds_to_decide <= SEEDS_SHOWN else f"; more than {SEEDS_SHOWN:,} seeds would decide")
        if t.from_steps is None:
            verdict = {"flat": "flattened", "moving": "**not flattened**", "undecided": "**flattening undecided**"}
            length = "" if t.beside is None else f"; beside it, {cell(t.beside, col)}"
            return f"{verdict[t.state]} ({delta}; {tolerance}{length})"
        verdict = {"flat": "length-converged", "moving": "**not length-converged**", "undecided": "**length undecided**"}
        tail = "" if t.beside is None else f"; tail: {cell(t.beside, col)}"
        return f"{verdict[t.state]} (final {t.from_steps:,} → {t.to_steps:,} updates {delta}; {tolerance}{tail})"

    def tally(col: Column) -> str:
        found = [trend_table[row.id][col.key] for row in spec.rows]
        counts = {name: sum(t is not None and t.state == state for t in found)
                  for state, name in (("flat", "converged or flattened"), ("moving", "still moving"), ("undecided", "undecided"))}
        counts["not measured"] = sum(t is None for t in found)
        return f"{col.label}: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n)

    lengths = any(t is not None and (t.from_steps is not None or t.beside is not None)
                  for row in trend_table.values() for t in row.values())
    figures = "the `curves` figure below" + ("; final values against length: the `length_curves` figure" if lengths
                                             else "")
    lines = ["## Convergence", "", f"Rule: {RULE}. Curves: {figures}.", "",
             "| row | " + " | ".join(c.label for c in spec.columns) + " |", "|" + "---|" * (len(spec.columns) + 1)]
    lines += ["| " + " | ".join([row.label] + [cell(trend_table[row.id][c.key], c) for c in spec.columns]) + " |"
              for row in spec.rows]
    decide = any(t is not None and t.seeds_to_decide for row in trend_table.values() for t in row.values())
    lines += ["", "Rows per column: " + "; ".join(tally(c) for c in spec.columns) + "." + (
        " \"seeds would decide\": the number of seeds at which two standard errors would clear the tolerance one way "
        "or the other, were the change and the seeds' spread to stay as measured (an estimate of what a verdict "
        f"costs, not a verdict); \"more than {SEEDS_SHOWN:,}\": the change sits about on the tolerance, where more "
        "seeds hardly help and a longer run (or more curve points in the tail) decides." if decide else "")]
    return lines + [""]


def _progress_lines(spec: TableSpec, records: Records) -> list[str]:
    running = in_progress(records)
    if not running:
        return []
    lines = ["**Runs under way** (each continues from its checkpoint on the next `repro reproduce "
             f"{spec.name}`):", ""]
    again = {run.name for run, record in records if status_of(record) in DONE}
    lines += [(f"- `{name}`: {done:,} of {asked:,} generator updates" if done is not None and asked
               else f"- `{name}`: checkpoint present") + (" (trained again; its finished record counts until then)"
                                                         if name in again else "")
              for name, done, asked in running]
    return lines + [""]


def _stale_lines(spec: TableSpec, stale: dict[str, list[str]]) -> list[str]:
    """The finished runs whose config differs from what the spec gives now (``repro.tables.stale``): their
    numbers are in the table, made with the recorded settings, not the spec's."""
    if not stale:
        return []
    lines = [f"**Stale runs** ({len(stale)}): trained with other settings than `paper_tables/{spec.name}.yaml` gives "
             f"now, and counted in the table as they are (`repro reproduce {spec.name} --rerun-stale` brings them up "
             "to date: retrains them, or continues from its saved final state a run whose only change is a longer "
             "`trainer.max_steps`):",
             ""]
    return lines + [f"- `{name}`: " + "; ".join(f"`{d}`" for d in diffs) for name, diffs in stale.items()] + [""]


def _markdown(
    spec: TableSpec, cells: dict[str, dict[str, Cell]], figures: list[Path], page: Path, unreported: dict[str, list[str]],
    records: Records, trend_table: dict[str, dict[str, Trend | None]] | None = None,
    stale: dict[str, list[str]] | None = None, correlations: dict[str, Correlated] | None = None,
) -> str:
    flat = None if trend_table is None else states(trend_table)
    peaked = None if trend_table is None else peak_states(spec, trend_table)
    sources: list[str] = []

    def cite(source: str) -> str:
        if source not in sources:
            sources.append(source)
        return f"[{sources.index(source) + 1}]"

    with_published = [c for c in spec.columns if any(c.key in r.published for r in spec.rows)]
    header = ["row"]
    for col in spec.columns:
        if col in with_published:
            n = f", n={col.paper_n}" if col.paper_n else ""
            header += [f"{col.label} (paper, ± {col.stat_name}{n})", f"{col.label} (ours, ± {col.stat_name})"]
        else:
            header.append(col.label)
    lines = [f"# {spec.title}", "", f"Reproduces **{spec.paper}**, {spec.table}.", "",
             f"> **Scale difference:** {spec.scale}", ""]
    if spec.steps_note:
        lines += [f"**Training length:** {spec.steps_note}", ""]
    if spec.steps_history:
        lines += ["<details><summary>How these lengths were chosen (history)</summary>", "", spec.steps_history.strip(),
                  "", "</details>", ""]
    lines += [f"**Runs:** {_status_line(spec, records)}", "", f"**Compute:** {compute_line(records)}", ""]
    lines += _stale_lines(spec, stale or {})
    lines += _progress_lines(spec, records)
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    mixed = any(len(cell.machines) > 1 for row in cells.values() for cell in row.values())
    lines += ["## Results", "",
              "Ours: mean ± sample std over independently trained seeds (n = finished runs; where the paper "
              "gives standard errors, ours are standard errors too, std/√n, as the column header says; one run: "
              "its value alone), final weights unless the protocol says EMA; diverged / failed runs are counted "
              "beside the mean, never averaged in." + (
                  " A time \"timed on k kinds of machine\" averages the clocks of CPUs of different speed (the Compute "
                  "line names them): it compares with no other cell." if mixed else "")
              + " Paper: as printed, with its source.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in spec.rows:
        line = [row.label]
        for col in spec.columns:
            if col in with_published:
                pub = row.published.get(col.key)
                line.append(f"{pub.value} {cite(pub.source)}" if pub else "")
            line.append(format_cell(cells[row.id][col.key], col))
        lines.append("| " + " | ".join(line) + " |")
    lines.append("")
    for key, reported in unreported.items():
        lines += [f"**Column `{key}` is in no finished run's record** (they report: "
                  f"{', '.join(f'`{k}`' for k in reported)}): fix the key in `paper_tables/{spec.name}.yaml`.", ""]
    if sources:
        lines += ["Sources of the published numbers:", ""] + [f"{i + 1}. {s}" for i, s in enumerate(sources)] + [""]
    lines += ["## Evaluation protocol per column", ""]
    for col in spec.columns:
        text = f"- **{col.label}** (`{col.key}`): {col.protocol}"
        if col.relative_to:
            text += f" Reported relative to row `{col.relative_to}`."
        if col.paper_protocol:
            text += f" *Paper's protocol:* {col.paper_protocol}"
        lines.append(text)
    lines.append("")
    stale_rows = {name.split("/")[0] for name in stale or {}}
    lines += reproduction_lines(spec, cells, flat, stale_rows)
    if spec.claims:
        lines += ["## The papers' claims at this scale", "",
                  "Each check is computed from the results above, in the units of the table; \"does not hold\" is "
                  "a finding at this scale; \"within noise\": the two sides differ by no more than the column's "
                  "stated noise floor, or (means, stds) by no more than two combined standard errors over the seeds, so "
                  "the data do not decide; \"one seed\": a compared mean rests on a single run, whose seed spread "
                  "is not measured, so no verdict; \"stale runs\": a compared row holds runs trained "
                  "with other settings than the spec's (listed above), so no verdict until they are rerun; \"not "
                  "converged\": a compared row's curve of the column had not flattened by the rule in section "
                  "'Convergence'; \"convergence undecided\": its length check's change is within two standard errors "
                  "of the tolerance, so the seeds cannot tell; \"convergence not measured\": it has no curve to judge that by (none recorded, or "
                  "too few points in the last 20 % of training), so no verdict"
                  + (f"; \"not significant\": a correlation whose two-sided p-value exceeds {ALPHA:g} (section "
                     "'Correlations across runs')" if correlations else "")
                  + ("; " + PEAK_RULE if any(str(side).endswith(":peak") for c in spec.claims for side in (c.a, c.b))
                     else "") + ".", "",
                  "| claim | source | check | at this scale |", "|---|---|---|---|"]
        for claim in spec.claims:
            shown, verdict = claim_verdict(claim, cells, spec, flat, stale_rows, correlations or {}, peaked)
            note = f" {claim.note}" if claim.note else ""
            lines.append(f"| {claim.text}{note} | {claim.source} | {shown} | **{verdict}** |")
        lines.append("")
    lines += correlation_lines(spec, correlations or {})
    lines += _convergence_lines(spec, trend_table or {})
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}]({f.relative_to(page.parent).as_posix()})" for f in figures]
        lines.append("")
    ratios = {t.from_steps / t.to_steps for row in (trend_table or {}).values() for t in row.values()
              if t is not None and t.from_steps is not None and t.to_steps}  # the page's length checks
    commands = ([f"repro reproduce {spec.name} --length-scale {ratios.pop():g}    # the shorter runs of the length "
                 "check", f"repro reproduce {spec.name} --rerun-stale    # the spec's length; each run keeps them"]
                if len(ratios) == 1 else [f"repro reproduce {spec.name}    # finished runs are skipped"])
    lines += ["## Regenerate", "", "```bash", *commands, "```", "",
              f"Spec: `paper_tables/{spec.name}.yaml`. Per-run records (metrics, steps, wall time, machine, exact "
              f"config and command, library versions, checkpoint path) and figures: "
              f"`results/{spec.name}/<row>/seed<k>/`. All numbers: `paper_tables/{spec.name}.csv`.", ""]
    return "\n".join(lines)


def write_report(spec: TableSpec, records: Records | None = None, stale: dict[str, list[str]] | None = None) -> Path:
    """Write ``paper_tables/<name>.md``, ``.csv``, the figure panels and ``results/<name>/README.md`` from the
    run records, each read once (``records``: already read, else read here); ``stale``: run name → its config
    differences, listed on the page."""
    records = read_records(spec) if records is None else records
    cells = _display_cells(spec, aggregate(spec, records))
    page = spec.path.with_suffix(".md")
    figures = []
    for panel in spec.panels:
        groups: dict[str, list[Row]] = {}
        for row in spec.rows:
            groups.setdefault(row.group, []).append(row)
        for group, rows in groups.items():
            name = Path(panel.image).stem
            out = _panel(spec, panel.image, panel.title, group, rows,
                         page.parent / "figures" / spec.name / f"{group}_{name}.png")
            if out is not None:
                figures.append(out)
    unreported = unreported_columns(spec, records)
    for key, reported in unreported.items():
        print(f"warning: {spec.name}: column {key!r} is in no finished run's metrics (they report: {', '.join(reported)})")
    for trace in spec.traces:
        name = trace.key.replace("/", "_")
        out = draw_trace(spec, trace, page.parent / "figures" / spec.name / f"trace_{name}.png")
        if out is not None:
            figures.append(out)
    correlations = correlate(spec, records)
    for result in correlations.values():
        out = draw_correlation(spec, result, page.parent / "figures" / spec.name / f"corr_{result.corr.id}.png")
        if out is not None:
            figures.append(out)
    for key in spec.charts:
        col = next(c for c in spec.columns if c.key == key)
        out = _chart(spec, col, cells, page.parent / "figures" / spec.name / f"chart_{key}.png")
        if out is not None:
            figures.append(out)
    trend_table = trends(spec, records)
    for out in reversed([draw_curves(spec, records, page.parent / "figures" / spec.name / "curves.png"),
                         draw_length_curves(spec, records, page.parent / "figures" / spec.name / "length_curves.png")]):
        if out is not None:
            figures.insert(0, out)
    page.write_text(_markdown(spec, cells, figures, page, unreported, records, trend_table, stale, correlations))
    page.with_suffix(".csv").write_text(_csv(spec, cells))
    if spec.results_dir.exists():
        (spec.results_dir / "README.md").write_text(
            f"# results/{spec.name}\n\nWritten by `repro reproduce {spec.name}` (possibly in parts, with `--only` / "
            f"`--seeds`) from committed code: each `{RECORD_FILE}` records the git commit and the exact `repro fit` "
            f"command of its run. Aggregated "
            f"in `paper_tables/{spec.name}.md`. Checkpoints are not committed; their paths (under `runs/`) "
            f"are in each `{RECORD_FILE}`" + (
                ", except the in-progress ones of long runs (`*/in_progress/`), committed so that a run continues "
                "on another machine; a run removes its own when it finishes" if any(
                    spec.results_dir.glob("*/*/in_progress/progress.json")) else "") + (
                "; but the final states of finished runs (`*/final_state/`, the spec's `commit_final_states`) are "
                "committed, so that a longer `trainer.max_steps` continues them on any machine" if any(
                    spec.results_dir.glob(f"*/*/{FINAL_STATE}/progress.json")) else "") + ".\n")
    return page


def summary_table(spec: TableSpec, records: Records | None = None) -> Any:
    """The page's results as a terminal table (rich): one line per row, ours beside the paper's where printed."""
    from rich.table import Table

    cells = _display_cells(spec, aggregate(spec, records))
    table = Table(title=f"{spec.name}: {spec.title}", title_justify="left")
    table.add_column("row")
    for col in spec.columns:
        table.add_column(col.label, justify="right")
    for row in spec.rows:
        texts = []
        for col in spec.columns:
            pub = row.published.get(col.key)
            texts.append(format_cell(cells[row.id][col.key], col) + (f"\n(paper {pub.value})" if pub else ""))
        table.add_row(row.label, *texts)
    return table

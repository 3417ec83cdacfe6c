"""Whether each published number a row prints is reproduced: the page's section "Published numbers reproduced?".

A column opts in with ``reproduction`` (``repro.tables.spec.Column``), the rule an issue or paper sets for it:

- ``two_se``: our mean over seeds lies within two combined standard errors of the published mean,
  |ours - paper| <= 2 sqrt(se_ours^2 + se_paper^2), se_ours = std / sqrt(n) over our seeds and se_paper the printed
  ± (``paper_stat: se``) or the printed std / sqrt(``paper_n``);
- ``spread``: our mean lies within the published mean ± its printed spread (for a paper that prints a std over an
  unstated number of runs).

A verdict is made only as a claim's is (``repro.tables.report.claim_verdict``): on finished runs of the spec's
settings whose curve of the column has flattened, over at least two seeds; otherwise the cell says which of these
is missing.
"""
from __future__ import annotations

import math

from repro.tables.cell import Cell
from repro.tables.curves import State, unconverged
from repro.tables.spec import Column, Published, Row, TableSpec

__all__ = ["RULES", "reproduction_verdict", "reproduction_lines"]

RULES = {"two_se": "our mean lies within two combined standard errors of the published mean",
         "spread": "our mean lies within the published mean ± its printed spread"}


def reproduction_verdict(col: Column, cell: Cell, published: Published, state: State | None,
                         stale: bool = False) -> tuple[str, str]:
    """(the comparison in the page's units, "reproduced" / "not reproduced" / why no verdict) for one row's
    published number of ``col`` against our ``cell``; ``state``: the row's convergence of the column."""
    paper = published.number()
    if paper is None:
        return f"{published.value} (no number)", "not measured"
    value, spread = paper
    if not cell.n:
        return f"paper {published.value}", "not run"
    ours = cell.mean * col.scale
    ours_spread = cell.spread(col)
    spread_text = "" if ours_spread is None else (
        f" ± {ours_spread * col.scale:{col.format}} {col.stat_name}")
    shown = f"ours {ours:{col.format}}{spread_text} (n={cell.n}) vs paper {published.value}"
    if stale:
        return shown, "stale runs"
    instead = unconverged([state])
    if instead:
        return shown, instead
    if cell.n < 2:
        return shown, "one seed"
    if col.reproduction == "spread":
        low, high = value - spread, value + spread
        return f"{shown}: band {low:{col.format}} to {high:{col.format}}", (
            "reproduced" if low <= ours <= high else "not reproduced")
    paper_se = spread if col.paper_stat == "se" else spread / math.sqrt(col.paper_n)
    bound = 2 * math.hypot(cell.se * col.scale, paper_se)
    return f"{shown}: difference {abs(ours - value):.3g}; 2 combined s.e. {bound:.3g}", (
        "reproduced" if abs(ours - value) <= bound else "not reproduced")


def reproduction_lines(spec: TableSpec, cells: dict[str, dict[str, Cell]],
                       flat: dict[str, dict[str, State | None]] | None, stale_rows: set[str]) -> list[str]:
    """The page section: one line per (row, column) with a published number and a ``reproduction`` rule."""
    judged: list[tuple[Row, Column, Published]] = [
        (row, col, row.published[col.key]) for row in spec.rows for col in spec.columns
        if col.reproduction and col.key in row.published]
    if not judged:
        return []
    by_rule: dict[str, list[str]] = {}
    for col in spec.columns:
        if col.reproduction:
            by_rule.setdefault(col.reproduction, []).append(col.label)
    lines = ["## Published numbers reproduced?", "",
             "Reproduced when " + "; ".join(f"{RULES[rule]} ({', '.join(labels)})" for rule, labels in by_rule.items())
             + ". " + ("Standard errors: ours std/√n over our seeds, the paper's as printed or its std/√n. "
                       if "two_se" in by_rule else "")
             + "A verdict needs finished runs of the spec's settings whose curve of the column has flattened "
               "(section 'Convergence') and at least two seeds; otherwise the cell says what is missing.", "",
             "| row | column | comparison | verdict |", "|---|---|---|---|"]
    for row, col, published in judged:
        state = None if flat is None else flat.get(row.id, {}).get(col.key)
        shown, verdict = reproduction_verdict(col, cells[row.id][col.key], published, state, row.id in stale_rows)
        lines.append(f"| {row.label} | {col.label} | {shown} | **{verdict}** |")
    return lines + [""]

"""What ``repro reproduce TABLE`` will do, without torch or Lightning: the summary line and plan table the runner
prints before training, and ``--dry-run``, which prints them and checks every row whose resolved config is
cached (``repro.tables.resolve``) in well under a second."""
from __future__ import annotations

import os
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from repro.record import DONE, read_record, status_of
from repro.tables.plan import Records, Run, is_done, override_args, plan, relative
from repro.tables.resolve import check_configs, table_staleness, unchecked_note
from repro.tables.spec import TableSpec
from repro.tables.stale import Stale, stale_message

__all__ = ["dry_run", "print_plan", "summary_line", "todo_runs", "visible_gpus"]


def visible_gpus() -> int:
    """The GPUs a run would see, counted without importing torch: ``CUDA_VISIBLE_DEVICES`` if set, else the
    ``/dev/nvidiaN`` devices."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = [d for d in given.split(",") if d.strip()]
        return 0 if any(d.strip().startswith("-") for d in ids[:1]) else len(ids)
    devices = Path("/dev")
    return sum(1 for p in devices.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)) if devices.is_dir() else 0


def todo_runs(records: Records, found: list[Stale], stale: str) -> list[Run]:
    """The runs to train: not done, or stale with ``stale == "rerun"``."""
    rerun = {item.run.name for item in found} if stale == "rerun" else set()
    return [run for run, record in records if status_of(record) not in DONE or run.name in rerun]


def summary_line(spec: TableSpec, runs: list[Run], todo: list[Run], found: list[Stale], stale: str, devices: int,
                 launcher: str) -> str:
    """``<table>: R rows x S seeds = N runs, F finished, T to run on D device(s) (k stale: <policy>)``."""
    rows = len({r.row.id for r in runs})
    where = f"on {devices} device(s)" if launcher == "pool" else f"as {launcher} job arrays"
    return (f"[bold]{spec.name}[/]: {rows} rows x {len(runs) // max(rows, 1)} seeds = {len(runs)} runs, "
            f"{len(runs) - len(todo)} finished, {len(todo)} to run {where}"
            + (f" ({len(found)} stale: {stale})" if found else ""))


def print_plan(spec: TableSpec, runs: list[Run], console: Console) -> None:
    table = Table(title=f"{spec.name}: {spec.title}")
    for col in ("row", "config", "overrides", "seeds done"):
        table.add_column(col)
    for row in {r.row.id: r.row for r in runs}.values():
        mine = [r for r in runs if r.row.id == row.id]
        table.add_row(row.id, relative(row.config, spec.root),
                      " ".join(override_args({**spec.overrides, **row.overrides})),
                      f"{sum(is_done(r) for r in mine)}/{len(mine)}")
    console.print(table)


def dry_run(spec: TableSpec, console: Console, devices: int | None = None, seeds: list[int] | None = None,
            only: list[str] | None = None, stale: str = "refuse", launcher: str = "pool",
            check: bool = False) -> None:
    """Print what ``repro reproduce`` would run and the stale records it would refuse, train nothing. Rows are
    checked from cached parses; with ``check`` the others are parsed as a run parses them (Lightning)."""
    runs = plan(spec, seeds, only)
    parse = "missing" if check else "never"
    configs = check_configs(spec, runs, parse)
    records = [(run, read_record(run.results_dir)) for run in runs]
    found = table_staleness(spec, records, console, parse)
    todo = todo_runs(records, found, stale)
    devices = devices if devices is not None else (visible_gpus() or os.cpu_count() or 1)
    console.print(summary_line(spec, runs, todo, found, stale, devices, launcher))
    print_plan(spec, runs, console)
    if found:
        console.print(stale_message(spec.name, found), markup=False, soft_wrap=True)
    unchecked = [row for row in dict.fromkeys(r.row.id for r in runs) if row not in configs]
    if unchecked:
        console.print(unchecked_note(spec, unchecked), style="yellow", markup=False, soft_wrap=True)

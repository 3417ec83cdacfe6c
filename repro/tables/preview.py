"""What ``repro reproduce TABLE`` will do, without torch or Lightning: its jobs (seed ensembles or single runs), the
summary line the runner prints before training, and ``--dry-run``, which prints the plan (with the compute it still
needs: ``repro.tables.estimate``) and checks every row
whose resolved config (and stacking check) is cached (``repro.tables.resolve``) in well under a second."""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from repro.record import DONE, read_record, status_of
from repro.tables.estimate import JobEstimate, estimate_jobs, estimate_line, longest_first, runs_here
from repro.tables.extend import Extension, length_dependences, plan_extensions
from repro.tables.jobs import Job, group_jobs
from repro.tables.plan import Records, Run, is_done, override_args, plan, relative
from repro.tables.resolve import check_configs, stacking_refusals, table_staleness, unchecked_note
from repro.tables.spec import SpecError, TableSpec
from repro.tables.stale import Stale, stale_message

__all__ = ["dry_run", "print_plan", "summary_line", "stale_actions", "plan_all_jobs", "todo_runs", "visible_gpus",
           "ensemble_cap", "plan_jobs", "Backlog", "backlog"]


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


def summary_line(spec: TableSpec, runs: list[Run], todo: list[Run], processes: int, found: list[Stale], stale: str,
                 devices: int, launcher: str, extending: int = 0, unchecked: int = 0) -> str:
    """``<table>: R rows x S seeds = N runs, F finished, T to run on D device(s) [in P process(es)] (k stale: ...
    [, E continue to the new length]) [(U rows not checked for staleness: see below)]``: a dry-run's finished count
    includes the unchecked rows' stale runs, which it cannot see."""
    per_row = Counter(r.row.id for r in runs)
    low, high = min(per_row.values(), default=0), max(per_row.values(), default=0)
    seeds = f"{low}" if low == high else f"{low}-{high}"  # rows may set their own seeds
    where = f"on {devices} device(s)" if launcher == "pool" else f"as {launcher} job arrays"
    return (f"[bold]{spec.name}[/]: {len(per_row)} rows x {seeds} seeds = {len(runs)} runs, "
            f"{len(runs) - len(todo)} finished, {len(todo)} to run {where}"
            + (f" in {processes} process(es)" if processes != len(todo) else "")
            + (f" ({len(found)} stale: {stale}" + (f", {extending} continue to the new length" if extending else "")
               + ")" if found else "")
            + (f" ({unchecked} row(s) not checked for staleness: see below)" if unchecked else ""))


def stale_actions(found: list[Stale], records: Records, configs: dict[str, dict[str, Any]], parse: str,
                  extend: bool = True) -> tuple[list[Extension], dict[str, str]]:
    """What ``--rerun-stale`` does with each stale run (``repro.tables.extend.plan_extensions``: the jobs that
    continue from their final state, and per run ``extends from N`` or ``reruns: why``), each row's model checked
    for length-dependent settings by ``extend.length_dependences(..., parse)``; without ``extend`` every one reruns."""
    if not extend:
        return [], {item.run.name: "reruns (--no-extend)" for item in found}
    rows = {item.run.row.id: configs.get(item.run.row.id) for item in found}
    dependence, _ = length_dependences(rows, parse) if rows else ({}, [])
    return plan_extensions(found, records, configs, dependence)


def plan_all_jobs(todo: list[Run], found: list[Stale], records: Records, configs: dict[str, dict[str, Any]],
                  cap: int | None, stale: str, extend: bool, parse: str = "always"
                  ) -> tuple[list[Job], dict[str, str], list[Extension], dict[str, str]]:
    """The jobs that run ``todo`` (``plan_jobs``), where with ``stale="rerun"`` the stale runs that continue from
    their final state (``stale_actions``) are their own jobs; each row's ``how``, those extensions, and what
    ``--rerun-stale`` does with each stale run."""
    extensions, actions = stale_actions(found, records, configs, parse, extend)
    extensions = extensions if stale == "rerun" else []
    extended = {run.name for e in extensions for run in e.job.runs}
    jobs, how = plan_jobs([r for r in todo if r.name not in extended], configs, cap, parse)
    for extension in extensions:
        row = extension.job.row.id
        how[row] = (f"{how[row]}, " if row in how else "") + f"{extension.job.name} extends from {extension.from_steps}"
    return jobs + [e.job for e in extensions], how, extensions, actions


def print_plan(spec: TableSpec, runs: list[Run], how: dict[str, str], console: Console) -> None:
    """The plan: each row's config, overrides, seeds done and how its unfinished seeds run (``group_jobs``)."""
    table = Table(title=f"{spec.name}: {spec.title}")
    for col in ("row", "config", "overrides", "seeds done", "runs as"):
        table.add_column(col)
    for row in {r.row.id: r.row for r in runs}.values():
        mine = [r for r in runs if r.row.id == row.id]
        table.add_row(row.id, relative(row.config, spec.root),
                      " ".join(override_args({**spec.overrides, **row.overrides})),
                      f"{sum(is_done(r) for r in mine)}/{len(mine)}", how.get(row.id, "-"))
    console.print(table)


def ensemble_cap(spec: TableSpec, ensemble_size: int | None, no_ensemble: bool) -> int | None:
    """Most seeds per ensemble job: 1 with ``no_ensemble``, else ``ensemble_size`` (the command line's), else the
    spec's ``ensemble_size``, else None (all unfinished seeds of a row in one job)."""
    if no_ensemble:
        return 1
    if ensemble_size is not None and ensemble_size < 1:
        raise SpecError(f"--ensemble-size must be >= 1, got {ensemble_size} (--no-ensemble: one process per seed)")
    return ensemble_size if ensemble_size is not None else spec.ensemble_size


def plan_jobs(todo: list[Run], configs: dict[str, dict[str, Any]], cap: int | None,
              parse: str = "always") -> tuple[list[Job], dict[str, str]]:
    """Group ``todo`` into jobs (``repro.tables.jobs.group_jobs``), each row's model checked for stacking from its
    resolved config first (unless ``cap`` is 1: no ensembles), by ``resolve.stacking_refusals(..., parse)``; a row
    it could not check (``parse="never"``, nothing cached) is grouped as if it stacks, and its ``how`` says so."""
    rows = dict.fromkeys(r.row.id for r in todo)
    refusals, unknown = ({}, []) if cap == 1 else stacking_refusals({row: configs.get(row) for row in rows}, parse)
    jobs, how = group_jobs(todo, cap, refusals)
    for row in unknown:
        if "ensemble" in how.get(row, ""):
            how[row] += " (if its model stacks: not checked yet, --check-configs)"
    return jobs, how


JobPlan = tuple[list[Job], dict[str, str], list[Extension], dict[str, str]]  # plan_all_jobs' answer


def _table_plan(spec: TableSpec, runs: list[Run], stale: str, cap: int | None, parse: str, extend: bool = True,
                console: Console | None = None
                ) -> tuple[dict[str, dict[str, Any]], Records, list[Stale], list[Run], JobPlan]:
    """What ``repro reproduce`` would train of ``runs``: the rows' parses (``check_configs(..., parse)``), the records,
    the stale ones (the code warning printed to ``console``), the runs to train and ``plan_all_jobs``' answer."""
    configs = check_configs(spec, runs, parse)
    records = [(run, read_record(run.results_dir)) for run in runs]
    found = table_staleness(spec, records, console, parse)
    todo = todo_runs(records, found, stale)
    return configs, records, found, todo, plan_all_jobs(todo, found, records, configs, cap, stale, extend, parse)


def dry_run(spec: TableSpec, console: Console, devices: int | None = None, seeds: list[int] | None = None,
            only: list[str] | None = None, stale: str = "refuse", launcher: str = "pool",
            ensemble_size: int | None = None, no_ensemble: bool = False, check: bool = False,
            extend: bool = True) -> None:
    """Print what ``repro reproduce`` would run and the stale records it would refuse (each with what
    ``--rerun-stale`` does with it: continue, or rerun and why), train nothing. Rows are checked from cached parses;
    with ``check`` the others are parsed as a run parses them (Lightning)."""
    runs = plan(spec, seeds, only)
    configs, records, found, todo, (jobs, how, extensions, actions) = _table_plan(
        spec, runs, stale, ensemble_cap(spec, ensemble_size, no_ensemble), "missing" if check else "never", extend,
        console)
    devices = devices if devices is not None else (visible_gpus() or os.cpu_count() or 1)
    unchecked = [row for row in dict.fromkeys(r.row.id for r in runs) if row not in configs]
    console.print(summary_line(spec, runs, todo, len(jobs), found, stale, devices, launcher,
                               sum(len(e.job.runs) for e in extensions), len(unchecked)))
    estimates = longest_first(estimate_jobs(jobs, records, configs, extensions, runs_here(launcher)))
    console.print(estimate_line(spec.name, estimates, devices, launcher, "GPU" if visible_gpus() else "core"),
                  markup=False, soft_wrap=True)
    print_plan(spec, runs, how, console)
    if found:
        console.print(stale_message(spec.name, found, actions), markup=False, soft_wrap=True)
    if unchecked:
        console.print(unchecked_note(spec, unchecked), style="yellow", markup=False, soft_wrap=True)


@dataclass(frozen=True)
class Backlog:
    """Where a table stands against its spec: finished runs, the stale ones among them, rows whose staleness could
    not be checked (no cached parse), and the estimate of what ``--rerun-stale`` would still train."""

    records: Records
    stale: list[Stale]
    unchecked: list[str]
    estimates: list[JobEstimate]


def backlog(spec: TableSpec) -> Backlog:
    """The table's state as ``repro reproduce TABLE --rerun-stale --dry-run`` would find it (cached parses only:
    no torch, no Lightning), for ``repro tables``."""
    configs, records, found, _, (jobs, _, extensions, _) = _table_plan(spec, plan(spec), "rerun",
                                                                       ensemble_cap(spec, None, False), "never")
    finished_rows = dict.fromkeys(run.row.id for run, record in records if status_of(record) in DONE)
    return Backlog(records, found, [row for row in finished_rows if row not in configs],
                   estimate_jobs(jobs, records, configs, extensions, runs_here("pool")))

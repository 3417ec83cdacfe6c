"""A page's **Compute:** line: what the table's finished runs cost and what they ran on, from their records.

A training process is one ``repro fit``: a single run, or a seed ensemble whose members shared it. Members'
records carry the process's ``wall_seconds`` (training + evaluation) and each its own ``train_seconds`` clock
of that process, so an ensemble is counted once: by its row, its seeds (``ensemble.seeds``) and that wall time.
Only finished and diverged runs count; unfinished ones (in progress, failed, stopped) are named by their number.
Records written before the ``machine`` block (``repro.record.machine``) count as "not recorded". A resumed run's
``wall_seconds`` holds every process of it (``earlier_wall_seconds`` + the last one's: ``repro.tables.execute``);
a resumed record without a number there (written before that count) holds the last process's alone, so with any
such record the summed wall time is called a lower bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repro.record import DONE, status_of
from repro.tables.curves import in_progress
from repro.tables.plan import Records

__all__ = ["Process", "processes", "describe_machine", "hours_minutes", "compute_line"]


@dataclass(frozen=True)
class Process:
    """One training job of finished runs (its processes, if resumed, as one): its name, seconds (None: not
    recorded), machine, whether it resumed, and whether its wall time misses its earlier processes (old records)."""

    name: str
    wall_seconds: float | None
    train_seconds: float | None
    machine: str | None
    resumed: bool
    wall_partial: bool = False


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def describe_machine(block: Any) -> str | None:
    """A record's ``machine`` block in words; None for a record without one."""
    if not isinstance(block, dict):
        return None
    threads = block.get("torch_threads")
    thread_text = "torch threads not recorded" if threads is None else f"{threads} torch thread{'s' * (threads != 1)}"
    accelerator = block.get("accelerator")
    device = "no GPU" if accelerator == "cpu" else f"{block.get('accelerator_count')}× {accelerator}"
    cpu = block.get("cpu") or "CPU model unknown"
    isa = f" ({block['cpu_isa']} kernels)" if block.get("cpu_isa") else ""  # not in records before 4 Dec
    return f"{cpu}{isa}, {block.get('logical_cores')} logical cores, {thread_text}, {device}"


def processes(records: Records) -> list[Process]:
    """The training processes of the finished and diverged runs, in record order: an ensemble's members (same
    row, same ``ensemble.seeds``, same ``wall_seconds``) as one process whose ``train_seconds`` is the longest
    member clock."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    names: dict[tuple, str] = {}
    for run, record in records:
        if status_of(record) not in DONE:
            continue
        seeds = (record.get("ensemble") or {}).get("seeds")
        if seeds:
            key: tuple = (run.row.id, tuple(seeds), record.get("wall_seconds"))
            names[key] = f"{run.row.id}/seeds {', '.join(map(str, seeds))}"
        else:
            key = (run.name,)
            names[key] = run.name
        groups.setdefault(key, []).append(record)
    out = []
    for key, members in groups.items():
        trains = [t for t in (_seconds(r.get("train_seconds")) for r in members) if t is not None]
        resumed = [r for r in members if r.get("resumed_at_steps")]
        out.append(Process(names[key], _seconds(members[0].get("wall_seconds")), max(trains) if trains else None,
                           describe_machine(members[0].get("machine")), bool(resumed),
                           any(_seconds(r.get("earlier_wall_seconds")) is None for r in resumed)))
    return out


def hours_minutes(seconds: float) -> str:
    """``h:mm``, rounded to the minute."""
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def compute_line(records: Records) -> str:
    """The text after **Compute:**: processes, summed wall time (core-hours and h:mm), summed training time, the
    longest process, the machines as recorded, and what is not counted."""
    procs = processes(records)
    running = {name for name, _, _ in in_progress(records)}
    unfinished = sum(1 for run, record in records
                     if status_of(record) not in DONE and (record is not None or run.name in running))
    skipped = (f" Not counted: {_count(unfinished, 'unfinished run')} (in progress, failed or stopped)."
               if unfinished else "")
    if not procs:
        return "no finished runs yet." + skipped
    timed = [p for p in procs if p.wall_seconds is not None]
    wall = sum(p.wall_seconds for p in timed)
    train = sum(p.train_seconds for p in procs if p.train_seconds is not None)
    text = (f"{_count(len(procs), 'training process')} (a seed ensemble is one process); summed process wall time "
            f"(training + evaluation) {wall / 3600:.1f} core-hours = {hours_minutes(wall)} h:mm, counting one core "
            f"per process (the table runner gives each CPU process one thread); summed `train_seconds` "
            f"{hours_minutes(train)} h:mm")
    if timed:
        longest = max(timed, key=lambda p: p.wall_seconds)
        text += f"; the longest process {hours_minutes(longest.wall_seconds)} h:mm (`{longest.name}`)"
    if len(timed) < len(procs):
        text += f"; {_count(len(procs) - len(timed), 'process')} with no recorded wall time"
    text += (". Summed process time is not the table's elapsed time: processes that ran in parallel overlap, so the "
             "table took less time than this on the clock.")
    machines: dict[str | None, int] = {}
    for p in procs:
        machines[p.machine] = machines.get(p.machine, 0) + 1
    shown = [f"{m} ({_count(n, 'process')})" for m, n in machines.items() if m is not None]
    if None in machines:
        shown.append(f"not recorded for {_count(machines[None], 'process')} (records from before the field)")
    text += " Machine: " + "; ".join(shown) + "."
    counted = sum(p.resumed and not p.wall_partial for p in procs)
    if counted:
        text += (f" {_count(counted, 'process')} resumed earlier processes' checkpoints: the wall time adds each "
                 "earlier process's up to its last checkpoint (not what a killed process spent after it).")
    partial = sum(p.wall_partial for p in procs)
    if partial:
        text += (f" {_count(partial, 'process')} continued an earlier process's checkpoint in a record from before "
                 "earlier processes' wall time was counted: the summed wall time is a lower bound.")
    return text + skipped

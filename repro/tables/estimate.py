"""An estimate of the compute a table still needs: one line after the summary line of ``repro reproduce`` (and of its
``--dry-run``), from the table's own earlier records. Planning-time only; imports neither torch nor Lightning.

Rules:

- A job's remaining updates: its planned ``trainer.max_steps`` (the row's resolved config; without a cached parse,
  the spec's ``trainer.max_steps`` override) minus the step its ``in_progress`` checkpoint is at (``progress.json``'s
  ``generator_steps``; a checkpoint started for another length counts from 0, as ``extend.void_retimed`` may
  restart it), and for a job that continues finished runs (``extend.Extension``) minus at least ``from_steps``.
- A row's per-member-update cost: the median over its records on disk (any status, any length, stale ones too) of
  ``train_seconds / generator_steps / (ensemble size or 1)`` (an ensemble member's ``train_seconds`` is the whole
  job's clock), over those made on this kind of machine (``record.machine_kind``: CPU model and the vector ISA
  torch's kernels use; VMs under one CPU name differ ~2.5x in speed by it) when the row has any, else over all,
  and the line then says how many jobs' costs were read from other machines' records. A job costs that x its
  members x its remaining updates, scaled for evaluation (not in
  ``train_seconds``) by the row's median ``wall_seconds / train_seconds`` over records whose wall time counts every
  process of the run (not a resumed record without ``earlier_wall_seconds``) and is at least its training time;
  else by 1. A multi-device row's job costs that x its devices in device-hours.
- A job of a row without a usable record, or of unknown length, has no estimate: counted and named, never guessed.
- The runner's order (``longest_first``): jobs under way first (an ``in_progress`` checkpoint started for this
  length), fewest remaining updates first: a session that ends mid-table then leaves finished runs, not another run
  begun, and a run begun is never starved by fresh ones, which always have more left; then jobs without an estimate
  (their cost is unknown, so they are not left to the end), then the others longest first (LPT: on 2 slots, 42, 42,
  42, 22, 22 min end at 86 min where the order 22, 22, 42, 42, 42 ends at 106), each group otherwise in plan order.
- Elapsed time on D slots: the jobs with an estimate list-scheduled in the runner's order, each taking
  ``row.devices`` slots, a job starting when the slots free up and never before the one ahead of it (the local
  pool's rule, ``runner._run_pool``); the makespan.
"""
from __future__ import annotations

import heapq
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from repro.record import machine_kind, read_json
from repro.tables.extend import Extension, planned_length, steps_value
from repro.tables.jobs import Job
from repro.tables.plan import Records

__all__ = ["JobEstimate", "runs_here", "member_update_seconds", "wall_ratios", "planned_steps", "remaining_steps",
           "list_schedule", "estimate_jobs", "longest_first", "amount", "estimate_line"]

SOURCE = "per-update costs from this table's earlier records"


@dataclass(frozen=True)
class JobEstimate:
    """A job's remaining updates (None: length unknown) and device seconds (None: no estimate)."""

    job: Job
    remaining: int | None
    seconds: float | None
    under_way: bool = False  # an in-progress checkpoint of this length counts toward ``remaining``
    elsewhere: bool = False  # its cost was read from records of another kind of machine than this one

    @property
    def slots(self) -> int:
        return self.job.row.devices


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def runs_here(launcher: str) -> tuple[str, str] | None:
    """The kind of machine a ``launcher``'s jobs run on, where it is this one (the local pool's); None for a
    scheduler's, whose nodes are not known here."""
    return machine_kind() if launcher == "pool" else None


def member_update_seconds(records: Records, kind: tuple[str, str] | None = None) -> dict[str, tuple[float, bool]]:
    """Per row id: the median over its records of ``train_seconds / generator_steps / ensemble size`` (over those
    made on a ``kind`` of machine, ``record.machine_kind``, when the row has any), and whether it was read from
    other machines' records (always False without a ``kind``)."""
    costs: dict[str, list[tuple[float, bool]]] = {}
    for run, record in records:
        if not record:
            continue
        train, steps = _number(record.get("train_seconds")), steps_value(record.get("generator_steps"))
        if train is None or steps is None or train <= 0:
            continue
        size = steps_value((record.get("ensemble") or {}).get("size")) or 1
        here = kind is None or machine_kind(record.get("machine") or {}) == kind
        costs.setdefault(run.row.id, []).append((train / steps / size, here))
    out = {}
    for row, values in costs.items():
        same = [cost for cost, here in values if here]
        out[row] = (statistics.median(same or [cost for cost, _ in values]), not same)
    return out


def wall_ratios(records: Records) -> dict[str, float]:
    """Per row id: the median ``wall_seconds / train_seconds`` over its records whose wall time is complete (not a
    resumed run's without ``earlier_wall_seconds``) and not below their training time."""
    ratios: dict[str, list[float]] = {}
    for run, record in records:
        if not record:
            continue
        wall, train = _number(record.get("wall_seconds")), _number(record.get("train_seconds"))
        partial = bool(record.get("resumed_at_steps")) and _number(record.get("earlier_wall_seconds")) is None
        if wall is None or train is None or train <= 0 or partial or wall < train:
            continue
        ratios.setdefault(run.row.id, []).append(wall / train)
    return {row: statistics.median(values) for row, values in ratios.items()}


def planned_steps(job: Job, configs: dict[str, dict[str, Any]]) -> int | None:
    """The job's ``trainer.max_steps``: its row's resolved config's, else the spec's override; None if neither."""
    override = {**job.spec.overrides, **job.row.overrides}.get("trainer.max_steps")
    return planned_length(configs.get(job.row.id)) or steps_value(override)


def checkpoint_steps(job: Job, planned: int | None) -> int | None:
    """The step of the job's in-progress checkpoint when it was started for the ``planned`` length; else None."""
    if planned is None or job.resume_checkpoint() is None:
        return None
    progress = read_json(job.in_progress_dir / "progress.json") or {}
    started = steps_value(progress.get("max_steps"))
    return steps_value(progress.get("generator_steps")) or 0 if started is None or started == planned else None


def remaining_steps(job: Job, configs: dict[str, dict[str, Any]], extension: Extension | None = None) -> int | None:
    """Updates the job has left: planned length minus its checkpoint's step (one started for this length) and,
    extending, minus at least ``from_steps``; None when the length is unknown."""
    planned = planned_steps(job, configs)
    if planned is None:
        return None
    done = max(extension.from_steps if extension is not None else 0, checkpoint_steps(job, planned) or 0)
    return max(planned - done, 0)


def list_schedule(durations: Sequence[tuple[float, int]], slots: int) -> float:
    """The makespan of ``(seconds, slots taken)`` jobs started in order on ``slots`` slots: each starts once enough
    slots are free, never before the job ahead of it started (a job asking for more than ``slots`` takes them all)."""
    running: list[tuple[float, int]] = []  # (end, slots held), a heap
    free, now, end = max(slots, 1), 0.0, 0.0
    for seconds, wanted in durations:
        wanted = min(max(wanted, 1), max(slots, 1))
        while free < wanted:
            finish, held = heapq.heappop(running)
            now, free = max(now, finish), free + held
        heapq.heappush(running, (now + seconds, wanted))
        free -= wanted
        end = max(end, now + seconds)
    return end


def estimate_jobs(jobs: list[Job], records: Records, configs: dict[str, dict[str, Any]],
                  extensions: Sequence[Extension] = (), kind: tuple[str, str] | None = None) -> list[JobEstimate]:
    """Each job's remaining updates and device seconds (rules in the module docstring), in ``jobs``' order; costs
    from the records of the ``kind`` of machine where a row has some (``member_update_seconds``)."""
    cost, ratio = member_update_seconds(records, kind), wall_ratios(records)
    extending = {e.job.name: e for e in extensions}
    out = []
    for job in jobs:
        remaining = remaining_steps(job, configs, extending.get(job.name))
        per_update, elsewhere = cost.get(job.row.id, (None, False))
        seconds = (None if remaining is None or per_update is None else
                   per_update * len(job.runs) * remaining * ratio.get(job.row.id, 1.0) * job.row.devices)
        under_way = bool(checkpoint_steps(job, planned_steps(job, configs)))
        out.append(JobEstimate(job, remaining, seconds, under_way, elsewhere and seconds is not None))
    return out


def longest_first(estimates: Sequence[JobEstimate]) -> list[JobEstimate]:
    """The runner's order: jobs under way, fewest updates left first; then jobs without an estimate; then by device
    seconds per slot, longest first (stable)."""
    def key(e: JobEstimate) -> tuple[int, float]:
        if e.under_way:
            return 0, float(e.remaining or 0)
        return (1, 0.0) if e.seconds is None else (2, -e.seconds / e.slots)
    return sorted(estimates, key=key)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else "under a minute" if seconds < 60 else f"{seconds / 60:.0f} min"


def _named(rows: list[str]) -> str:
    rows = list(dict.fromkeys(rows))
    return ", ".join(rows[:4]) + (f" and {len(rows) - 4} more" if len(rows) > 4 else "")


def _jobs(n: int) -> str:
    return f"{n} job" + ("" if n == 1 else "s")


def amount(estimates: Sequence[JobEstimate], unit: str = "core") -> str:
    """The summed device time of the ``estimates`` that have one: ``X.Y <unit>-hours`` or ``N <unit>-minutes``."""
    total = sum(e.seconds for e in estimates if e.seconds is not None)
    return f"{total / 3600:.1f} {unit}-hours" if total >= 360 else f"{total / 60:.0f} {unit}-minutes"


def estimate_line(name: str, estimates: list[JobEstimate], devices: int, launcher: str = "pool",
                  unit: str = "core") -> str:
    """``<table>: estimated compute to finish: ~X <unit>-hours in N jobs (...; k jobs without one: rows); about
    Y h on D devices (longest job Z h: name)``; ``unit`` names a slot (``core``, ``GPU``)."""
    if not estimates:
        return f"{name}: estimated compute to finish: none (nothing to run)"
    known = [e for e in estimates if e.seconds is not None]
    no_record = [e.job.row.id for e in estimates if e.remaining is not None and e.seconds is None]
    no_length = [e.job.row.id for e in estimates if e.remaining is None]
    missing = ([f"{_jobs(len(no_record))} without one: {_named(no_record)}"] if no_record else []) + (
        [f"{_jobs(len(no_length))} of unknown length: {_named(no_length)} (not parsed yet: --check-configs)"]
        if no_length else [])
    if not known:
        return f"{name}: estimated compute to finish: unknown for {_jobs(len(estimates))} ({'; '.join(missing)})"
    elsewhere = [e.job.row.id for e in known if e.elsewhere]
    source = SOURCE + (f", for {_jobs(len(elsewhere))} ({_named(elsewhere)}) made on other kinds of machine than "
                       "this one (CPU model or vector ISA differ, or unrecorded), whose speed may differ several-fold"
                       if elsewhere else "")
    text = (f"{name}: estimated compute to finish: ~{amount(known, unit)} in {_jobs(len(estimates))} "
            f"({'; '.join([source, *missing])})")
    if launcher != "pool":
        return text
    longest = max(known, key=lambda e: e.seconds)
    span = list_schedule([(e.seconds / e.slots, e.slots) for e in known], devices)
    return (text + f"; about {_hours(span)} on {devices} device(s)"
            + (f" for the {_jobs(len(known))} with an estimate" if len(known) < len(estimates) else "")
            + f" (longest job {_hours(longest.seconds / longest.slots)}: {longest.job.name})")

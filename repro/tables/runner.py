"""Grid runner: a table's unfinished (row, seed) runs as ``repro fit`` subprocesses (``repro.tables.execute``): by
default a row's unfinished seeds as one seed ensemble (``repro.tables.jobs``: ``--ensemble-size`` caps the members
per process, ``--no-ensemble`` runs one process per seed; a row whose model cannot be stacked runs single runs).

A crash or divergence of one run never stops the table. ``devices`` slots run in parallel (CPU:
parallel processes with one thread each; GPU: one ``CUDA_VISIBLE_DEVICES`` slot per device, a row
with ``devices: k`` takes k slots for a DDP run). A run whose ``results/<table>/<row>/seed<k>/
metrics.json`` parses and says ``finished`` or ``diverged`` is skipped, so a killed table resumes
where it stopped. Every run keeps a resumable checkpoint in ``results/<table>/<row>/seed<k>/in_progress/`` (an
ensemble job in ``results/<table>/<row>/ensemble_<seeds>/in_progress/``; written every ``resumable.every_minutes``
and when the run is stopped; ``repro.callbacks.resumable``): an unfinished or failed run continues from it, bit-exactly, instead of restarting; a run without one restarts
from scratch in a fresh run folder. The folder is replaced by the final record when the run finishes; a run
that trained to its length and failed at evaluation continues from its final checkpoint and is only evaluated. A
finished job keeps that last checkpoint as ``final_state/`` in its folder under ``runs/``: when the spec only lengthens
a run, ``--rerun-stale`` continues it from there instead of retraining (``repro.tables.extend``).
Children get SIGTERM (and so write their checkpoint) when the runner dies, even by SIGKILL.

Before anything trains: every row's config is parsed, finished records are checked against it
(``repro.tables.stale``: stale ones refuse to be reused unless ``--rerun-stale`` / ``--accept-stale``), and
the table is locked against a second runner (``repro.tables.lock``). A run that fails (or stops short of its
length) is listed with its one-line cause, and ``repro reproduce`` exits non-zero. Runs go to a local
process pool (``launcher="pool"``), or as job arrays to SLURM or submitit's local executor
(``repro.tables.launch``).
"""
from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from repro.console import wide_console
from repro.fit import has_preparation
from repro.record import Status, read_record, source_state, status_of
from repro.tables.estimate import estimate_jobs, estimate_line, longest_first, runs_here
from repro.tables.execute import collect, failure_cause, print_result, resume_label, start
from repro.tables.extend import begin_extension, discard_extensions, length_dependences, void_retimed
from repro.tables.jobs import Job
from repro.tables.lock import TableLock
from repro.tables.plan import Run, plan, relative
from repro.tables.processes import JobProcess
from repro.tables.preview import ensemble_cap, plan_all_jobs, plan_jobs, summary_line, todo_runs
from repro.tables.resolve import check_configs, table_staleness
from repro.tables.spec import SpecError, TableSpec
from repro.tables.stale import stale_message

__all__ = ["check_configs", "reproduce", "library_versions", "failures", "StaleRecords",
           "STALE_POLICIES", "LAUNCHERS", "table_staleness", "ensemble_cap", "plan_jobs"]

STALE_POLICIES = ("refuse", "rerun", "accept")
LAUNCHERS = ("pool", "slurm", "local")


class StaleRecords(SpecError):
    """Finished records whose inputs differ from the spec's, with neither ``--rerun-stale`` nor ``--accept-stale``."""


_VERSIONED = ("torch", "torchvision", "lightning", "torchmetrics", "torch-fidelity", "jsonargparse", "numpy")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out




def _child_env(slot_ids: list[int], use_cuda: bool) -> dict[str, str]:
    env = dict(os.environ)
    if use_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot_ids))
    else:  # parallel CPU processes: one thread each, or they fight over the cores
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@dataclass
class _Active:
    job: Job
    proc: JobProcess
    slots: list[int]
    start: float
    task: Any


def failures(written: list[dict[str, Any]]) -> list[str]:
    """``row/seed<k>: cause`` for each record in ``written`` that failed or stopped short of its length."""
    return [f"{r.get('row')}/seed{r.get('seed')}: {r.get('error') or failure_cause(r)}" for r in written
            if status_of(r) in (Status.FAILED, Status.STOPPED)]


def prepare(run: Run, console: Console, env: dict[str, str]) -> None:
    """Run the variant's preparation (``repro prepare``, e.g. RFGAN's autoencoder pre-training) once for a
    row, with its first run's arguments, before any of its seeds start (so they do not all prepare at once)."""
    console.print(f"preparing {run.row.id}: repro prepare")
    done = subprocess.run(run.command("prepare"), cwd=run.spec.root, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # its runs will fail and be reported; the table goes on
        console.print(f"[red]prepare failed for {run.row.id}[/]: {done.stderr.strip()[-500:]}")


def reproduce(spec: TableSpec, devices: int | None = None, seeds: list[int] | None = None,
              only: list[str] | None = None, console: Console | None = None,
              stale: str = "refuse", launcher: str = "pool", slurm: dict[str, Any] | None = None,
              wandb: bool = False, ensemble_size: int | None = None, no_ensemble: bool = False,
              extend: bool = True) -> list[dict[str, Any]]:
    """Run every unfinished (row, seed) of ``spec`` (and, with ``stale="rerun"``, every stale one) on ``devices``
    parallel slots (default: every GPU, else every core), or as job arrays (``launcher`` ``slurm`` / ``local``,
    with ``slurm`` resources over the spec's); stale finished runs stop it before training unless ``stale`` is
    ``rerun`` or ``accept``. A row's unfinished seeds train together as seed ensembles of at most
    ``ensemble_size`` (else the spec's; default all) seeds, one slot each, unless ``no_ensemble`` or the row's model
    cannot be stacked (``repro.tables.jobs``). With ``stale="rerun"`` and ``extend``, a stale run whose table only
    grew its length continues from its final state (``repro.tables.extend``) instead of retraining. ``wandb``: each
    run also logs to W&B (``Run.wandb_args``; not part of the recorded command: it changes no result). Returns the
    records written this time."""
    if stale not in STALE_POLICIES or launcher not in LAUNCHERS:
        raise SpecError(f"stale policy {stale!r} / launcher {launcher!r}; valid: {STALE_POLICIES}, {LAUNCHERS}")
    console = console or wide_console()
    runs = plan(spec, seeds, only)
    configs = check_configs(spec, runs, parse="always")  # the full parse a run does: every config error, now
    records = [(run, read_record(run.results_dir)) for run in runs]
    found = table_staleness(spec, records, console, parse="always")
    todo = todo_runs(records, found, stale)
    jobs, _, extensions, actions = plan_all_jobs(todo, found, records, configs,
                                                 ensemble_cap(spec, ensemble_size, no_ensemble), stale, extend)
    extended = {run.name for e in extensions for run in e.job.runs}
    devices = (torch.cuda.device_count() or os.cpu_count() or 1) if devices is None else devices
    console.print(summary_line(spec, runs, todo, len(jobs), found, stale, devices, launcher, len(extended)))
    if found and stale == "refuse":
        raise StaleRecords(stale_message(spec.name, found, actions))
    estimates = longest_first(estimate_jobs(jobs, records, configs, extensions, runs_here(launcher)))
    jobs = [e.job for e in estimates]
    console.print(estimate_line(spec.name, estimates, devices, launcher, "GPU" if torch.cuda.is_available() else "core"),
                  markup=False, soft_wrap=True)
    context = {"versions": library_versions(), **source_state(spec.root)}
    with TableLock(spec, note=console.print) as lock:
        discard_extensions([run for run in todo if run.name in actions and run.name not in extended])
        fresh = [job for job in jobs if not any(run.name in extended for run in job.runs)]
        rows = {job.row.id: configs.get(job.row.id) for job in fresh if job.resume_checkpoint() is not None}
        dependence, _ = length_dependences(rows) if rows else ({}, [])
        for line in void_retimed(fresh, configs, dependence):
            console.print(line, markup=False)
        for extension in extensions:
            begin_extension(extension, records)
        if launcher == "pool":
            written = _run_pool(spec, jobs, devices, configs, context, console, wandb)
        else:
            try:
                from repro.tables.launch import submit  # submitit: only for these launchers
            except ImportError as err:
                raise SpecError(f"--launcher {launcher} needs submitit ({err}): pip install 'repro[slurm]'") from None

            written = submit(spec, jobs, configs, context, launcher, slurm or {}, console, lock, wandb)
    return written


def _run_pool(spec: TableSpec, todo: list[Job], devices: int, configs: dict[str, dict[str, Any]],
              context: dict[str, Any], console: Console, wandb: bool) -> list[dict[str, Any]]:
    """Run ``todo`` as subprocesses on ``devices`` slots of this machine (an ensemble job takes one; logging to
    W&B too if ``wandb``); the records written."""
    if devices < 1:
        raise SpecError(f"--devices must be >= 1, got {devices}")
    too_big = [r.row.id for r in todo if r.row.devices > devices]
    if too_big:
        raise SpecError(f"row {too_big[0]!r} asks for more devices than --devices {devices}")
    use_cuda = torch.cuda.is_available()
    unprepared = {row for row, config in configs.items() if has_preparation(config["model"]["class_path"])}
    free, active, pending, written = list(range(devices)), [], list(todo), []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task(f"{spec.name}", total=sum(len(j.runs) for j in todo))
            while pending or active:
                while pending and len(free) >= pending[0].row.devices:
                    job = pending.pop(0)
                    slots, free = free[: job.row.devices], free[job.row.devices:]
                    if job.row.id in unprepared:
                        prepare(job.runs[0], console, _child_env(slots, use_cuda))
                        unprepared.discard(job.row.id)
                    label = resume_label(job)
                    if label:
                        progress.console.print(f"{job.name}{label}: from {relative(job.in_progress_dir, spec.root)}",
                                               markup=False)
                    proc = start(job, _child_env(slots, use_cuda), job.wandb_args() if wandb else [])
                    task = progress.add_task(f"  {job.name}{label}", total=None)
                    active.append(_Active(job, proc, slots, time.perf_counter(), task))
                time.sleep(0.2)
                for done in [a for a in active if a.proc.poll() is not None]:
                    active.remove(done)
                    free = sorted(free + done.slots)
                    records = collect(done.job, done.proc.returncode, time.perf_counter() - done.start, context)
                    written += records
                    progress.remove_task(done.task)
                    progress.advance(overall, len(records))
                    for record in records:
                        print_result(record, console)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for left in active:  # interrupted: stop children; each writes its checkpoint and continues next time
            left.proc.terminate()
        for left in active:
            try:
                left.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # Lightning only flags SIGTERM; do not wait for the step loop
                left.proc.kill()
                left.proc.wait()
    return written

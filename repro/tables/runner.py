"""Grid runner: every (row, seed) of a table is one ``repro fit`` subprocess.

A crash or divergence of one run never stops the table. ``devices`` slots run in parallel (CPU:
parallel processes with one thread each; GPU: one ``CUDA_VISIBLE_DEVICES`` slot per device, a row
with ``devices: k`` takes k slots for a DDP run). A run whose ``results/<table>/<row>/seed<k>/
metrics.json`` parses and says ``finished`` or ``diverged`` is skipped, so a killed table resumes
where it stopped. Every run keeps a resumable checkpoint in ``results/<table>/<row>/seed<k>/in_progress/``
(written every ``resumable.every_minutes`` and when the run is stopped; ``repro.callbacks.resumable``): an
unfinished or failed run continues from it, bit-exactly, instead of restarting; a run without one restarts
from scratch in a fresh run folder. The folder is replaced by the final record when the run finishes.
Children get SIGTERM (and so write their checkpoint) when the runner dies, even by SIGKILL.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from repro.console import wide_console
from repro.fit import has_preparation, parse_config
from repro.portable import path_roles, portable, portable_text
from repro.record import DONE, Status, read_json, read_record, source_state, status_of, write_json_atomic, write_record
from repro.tables.plan import Run, is_done, override_args, plan, relative
from repro.tables.spec import SpecError, TableSpec

__all__ = ["check_configs", "collect", "reproduce", "stitch_logs", "library_versions", "source_state"]

_VERSIONED = ("torch", "torchvision", "lightning", "torchmetrics", "torch-fidelity", "jsonargparse", "numpy")


def check_configs(spec: TableSpec, runs: list[Run]) -> dict[str, str]:
    """Parse (not instantiate) each row's config with its overrides, as the training subprocess will (from
    the spec's root); one ``SpecError`` for the first bad row. Returns each row's ``model.class_path``."""
    cwd = Path.cwd()
    os.chdir(spec.root)  # as the training subprocess sees relative paths in overrides
    variants: dict[str, str] = {}
    try:
        for run in runs:
            if run.row.id in variants:
                continue
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                        warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Lightning warns that args are passed in-process, by design
                    variants[run.row.id] = parse_config(run.fit_args()).model.class_path
            except (SystemExit, ValueError, TypeError, KeyError) as exc:
                lines = [ln for ln in err.getvalue().splitlines() if ln.strip()] or [str(exc)]
                raise SpecError(f"{spec.path.name}: row {run.row.id!r} ({run.row.config}) does not parse: "
                                f"{lines[-1]}") from None
    finally:
        os.chdir(cwd)
    return variants


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def collect(run: Run, returncode: int, wall_seconds: float, context: dict[str, Any]) -> dict[str, Any]:
    """Copy a finished subprocess's record and figures into ``results_dir`` and write its run record there."""
    work, out, root = run.work_dir, run.results_dir, run.spec.root
    record = read_record(work) or {}
    if status_of(record) is None or (returncode != 0 and status_of(record) is Status.FINISHED):
        record["status"] = Status.FAILED.value
    if status_of(record) is Status.FAILED:
        log = (work / "stderr.log").read_text(errors="replace").splitlines() if (work / "stderr.log").exists() else []
        record["error_tail"] = log[-15:]
    resumes = read_json(run.in_progress_dir / "resumes.json") or {}
    keep = run.in_progress_dir.exists() and status_of(record) not in DONE
    if keep:  # a failed run keeps its checkpoint: the next `repro reproduce` continues (or re-evaluates) it
        parked = run.work_dir / "in_progress.parked"
        shutil.rmtree(parked, ignore_errors=True)
        shutil.move(str(run.in_progress_dir), parked)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if keep:
        shutil.move(str(parked), run.in_progress_dir)
    figures = []
    for png in sorted(work.rglob("*.png")):
        target = out / png.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target)
        figures.append(str(png.relative_to(work)))
    config_path = work / "config.yaml"
    roles = path_roles(root)  # records name paths by role, never by this machine's absolute paths
    if config_path.exists():
        (out / "config.yaml").write_text(portable_text(config_path.read_text(), roles))
    if (work / "metrics.csv").exists():
        stitch_logs([*sorted(work.glob("metrics.part*.csv")), work / "metrics.csv"], out / "train_log.csv")
    checkpoints = sorted(work.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    steps = record.get("generator_steps")
    record.update(
        table=run.spec.name, row=run.row.id, seed=run.seed, returncode=returncode,
        wall_seconds=round(wall_seconds, 2),
        seconds_per_generator_step=(record["train_seconds"] / steps) if steps and "train_seconds" in record else None,
        command="repro fit " + shlex.join(run.fit_args()).replace(str(root) + os.sep, ""),
        config=yaml.safe_load(config_path.read_text()) if config_path.exists() else None,
        figures=figures, checkpoint=relative(checkpoints[-1], root) if checkpoints else None,
        run_dir=relative(work, root), resumed_at_steps=resumes.get("steps", []), **context,
    )
    write_record(portable(record, roles), out)
    return record


def stitch_logs(parts: list[Path], target: Path) -> None:
    """One training log from the CSV logs of a run's segments (oldest first): rows a segment logged after
    its last checkpoint, which the next segment logged again, are taken from the later segment."""
    tables = []
    for part in parts:
        with part.open(newline="") as f:
            tables.append(list(csv.DictReader(f)))
    rows: list[dict[str, str]] = []
    for table in reversed(tables):
        first = min((int(r["step"]) for r in rows), default=None)
        rows = [r for r in table if first is None or int(r["step"]) < first] + rows
    keys = sorted({k for table in tables for r in table for k in r})
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _child_env(slot_ids: list[int], use_cuda: bool) -> dict[str, str]:
    env = dict(os.environ)
    if use_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot_ids))
    else:  # parallel CPU processes: one thread each, or they fight over the cores
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the runner dies (prctl PR_SET_PDEATHSIG),
    so no training outlives its table runner, and each writes its resumable checkpoint on the way out."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start(run: Run, env: dict[str, str], extra: list[str] | tuple[str, ...] = ()) -> tuple[subprocess.Popen, Any, Any]:
    """Start ``run``'s ``repro fit`` (plus ``extra`` arguments that change no result, e.g. ``Run.wandb_args``):
    continuing from its in-progress checkpoint if it has one, else fresh."""
    ckpt = run.resume_checkpoint()
    if ckpt is None:
        if run.work_dir.exists():
            shutil.rmtree(run.work_dir)
    else:
        progress = read_json(run.in_progress_dir / "progress.json") or {}
        resumes = read_json(run.in_progress_dir / "resumes.json") or {"steps": []}
        resumes["steps"].append(progress.get("generator_steps"))
        write_json_atomic(resumes, run.in_progress_dir / "resumes.json")
        log = run.work_dir / "metrics.csv"
        if log.exists():  # Lightning's CSV logger deletes it on start: keep it as a part, stitched by `collect`
            log.rename(run.work_dir / f"metrics.part{len(list(run.work_dir.glob('metrics.part*.csv'))):03d}.csv")
    run.work_dir.mkdir(parents=True, exist_ok=True)
    mode = "a" if ckpt else "w"
    out, err = (run.work_dir / "stdout.log").open(mode), (run.work_dir / "stderr.log").open(mode)
    proc = subprocess.Popen([*run.command(ckpt=ckpt), *extra], stdout=out, stderr=err, cwd=run.spec.root, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    return proc, out, err


@dataclass
class _Active:
    run: Run
    proc: subprocess.Popen
    slots: list[int]
    start: float
    task: Any
    stdout: Any
    stderr: Any


def prepare(run: Run, console: Console, env: dict[str, str]) -> None:
    """Run the variant's preparation (``repro prepare``, e.g. RFGAN's autoencoder pre-training) once for a
    row, with its first run's arguments, before any of its seeds start (so they do not all prepare at once)."""
    console.print(f"preparing {run.row.id}: repro prepare")
    done = subprocess.run(run.command("prepare"), cwd=run.spec.root, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # its runs will fail and be reported; the table goes on
        console.print(f"[red]prepare failed for {run.row.id}[/]: {done.stderr.strip()[-500:]}")


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


def reproduce(spec: TableSpec, devices: int | None = None, seeds: list[int] | None = None,
              only: list[str] | None = None, dry_run: bool = False, console: Console | None = None,
              wandb: bool = False) -> list[dict[str, Any]]:
    """Run every unfinished (row, seed) of ``spec`` on ``devices`` parallel slots (default: every GPU, else
    every core); returns the records written this time. ``wandb``: each run also logs to W&B
    (``Run.wandb_args``; not part of the recorded command: it changes no result)."""
    devices = (torch.cuda.device_count() or os.cpu_count() or 1) if devices is None else devices
    console = console or wide_console()
    runs = plan(spec, seeds, only)
    variants = check_configs(spec, runs)
    todo = [r for r in runs if not is_done(r)]
    rows = len({r.row.id for r in runs})
    console.print(f"[bold]{spec.name}[/]: {rows} rows x {len(runs) // max(rows, 1)} seeds = {len(runs)} runs, "
                  f"{len(runs) - len(todo)} finished, {len(todo)} to run on {devices} device(s)")
    if dry_run:
        print_plan(spec, runs, console)
        return []
    if devices < 1:
        raise SpecError(f"--devices must be >= 1, got {devices}")
    too_big = [r.row.id for r in todo if r.row.devices > devices]
    if too_big:
        raise SpecError(f"row {too_big[0]!r} asks for more devices than --devices {devices}")
    use_cuda = torch.cuda.is_available()
    context = {"versions": library_versions(), **source_state(spec.root)}
    unprepared = {row for row, class_path in variants.items() if has_preparation(class_path)}
    free, active, pending, written = list(range(devices)), [], list(todo), []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task(f"{spec.name}", total=len(todo))
            while pending or active:
                while pending and len(free) >= pending[0].row.devices:
                    run = pending.pop(0)
                    slots, free = free[: run.row.devices], free[run.row.devices:]
                    if run.row.id in unprepared:
                        prepare(run, console, _child_env(slots, use_cuda))
                        unprepared.discard(run.row.id)
                    proc, out, err = start(run, _child_env(slots, use_cuda), run.wandb_args() if wandb else [])
                    resumed = " (resumed)" if run.resume_checkpoint() else ""
                    task = progress.add_task(f"  {run.name}{resumed}", total=None)
                    active.append(_Active(run, proc, slots, time.perf_counter(), task, out, err))
                time.sleep(0.2)
                for job in [a for a in active if a.proc.poll() is not None]:
                    active.remove(job)
                    job.stdout.close()
                    job.stderr.close()
                    free = sorted(free + job.slots)
                    record = collect(job.run, job.proc.returncode, time.perf_counter() - job.start, context)
                    written.append(record)
                    progress.remove_task(job.task)
                    progress.advance(overall)
                    colour = {Status.FINISHED: "green", Status.DIVERGED: "yellow"}.get(status_of(record), "red")
                    console.print(f"[{colour}]{record['status']:>9}[/] {job.run.name}  "
                                  f"{record['wall_seconds']:.0f}s  {json.dumps(record.get('metrics', {}))}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for job in active:  # interrupted: stop children; each writes its checkpoint and continues next time
            job.proc.terminate()
        for job in active:
            try:
                job.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # Lightning only flags SIGTERM; do not wait for the step loop
                job.proc.kill()
                job.proc.wait()
    return written

"""One job of a table (a run, or a seed ensemble of runs: ``repro.tables.jobs``) as a ``repro fit`` process
(``repro.tables.processes``): start it (continuing from its ``in_progress`` checkpoint when it left one), collect
what each run wrote into its results folder and run record, and say in one line how each ended. Shared by the
local process pool (``repro.tables.runner``) and the job launchers (``repro.tables.launch``).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from repro.portable import path_roles, portable, portable_text
from repro.record import (DONE, Status, machine, read_json, read_record, status_of, steps_asked, write_json_atomic,
                          write_record)
from repro.tables.extend import (EXTENSION_FILE, FINAL_STATE, SHORTER_RUNS, extension_label, final_state_dir,
                                 finish_extension, keep_final_state, length_history)
from repro.tables.jobs import Job, job_folders
from repro.tables.plan import Run, relative
from repro.tables.processes import JobProcess, start_process

__all__ = ["failure_cause", "collect", "collect_run", "stitch_logs", "start", "note_resume", "earlier_wall_seconds",
           "resume_label", "print_result"]


_CAUSE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Diverged)\b.*|repro \w[\w-]*: .*)$")


def failure_cause(record: dict[str, Any]) -> str:
    """A failed or stopped run's cause in one line: its stop reason, else the last exception line (or ``repro``
    error line) of its stderr tail, else the signal that killed it, else its last stderr line and exit code."""
    if record.get("stop_reason"):
        return str(record["stop_reason"])
    tail = [ln.strip() for ln in record.get("error_tail") or [] if ln.strip()]
    causes = [ln for ln in tail if _CAUSE.match(ln)]
    code = record.get("returncode")
    if causes:
        return causes[-1][:300]
    if isinstance(code, int) and code < 0:
        return f"killed by signal {-code}" + (" (SIGKILL: out of memory?)" if code == -9 else "")
    return f"exit code {code}: " + (tail[-1][:300] if tail else "no error output")


def collect(job: Job, returncode: int, wall_seconds: float, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Each run of a finished process (one run, or an ensemble's members): its record and figures copied into
    its ``results_dir`` with its run record (``collect_run``). An ensemble job's ``in_progress`` folder is
    removed once every member is done, else kept for the next ``repro reproduce``. A job that finished keeps its
    last state as ``final_state`` (``repro.tables.extend.final_state_dir``), and one that continued finished runs
    completes their records (``repro.tables.extend``); a run retrained at a new length keeps its shorter runs'
    finals."""
    extension = read_json(job.in_progress_dir / EXTENSION_FILE)  # before the run folders are replaced
    finished = returncode == 0 and all(status_of(read_record(r.work_dir)) is Status.FINISHED for r in job.runs)
    keep_final_state(job, finished)
    if extension is not None and not finished:
        # an extension that failed or stopped leaves the finished shorter runs' results as they are (their in_progress
        # state continues next time); what happened is in the records returned, for the runner to say
        attempts = [collect_run(run, job, returncode, wall_seconds, context, write=False) for run in job.runs]
        if not all(status_of(r) in DONE for r in attempts):
            return attempts
    records = [collect_run(run, job, returncode, wall_seconds, context, replaces=read_record(run.results_dir)
                           if extension is None else None) for run in job.runs]
    if extension is not None:
        records = [finish_extension(run, record, extension) for run, record in zip(job.runs, records)]
    if job.results_dir is not None and all(status_of(r) in DONE for r in records):
        _renew(job.results_dir, [final_state_dir(job)], job.work_dir, recreate=False)
    return records


def _renew(folder: Path, keep: list[Path], parking: Path, recreate: bool = True) -> None:
    """Empty ``folder`` but for those of its subfolders ``keep`` that exist (moved to ``parking`` meanwhile); remove
    it when nothing is kept, unless ``recreate``."""
    parked = [(f, parking / f"{f.name}.parked") for f in keep if f.parent == folder and f.is_dir()]
    for f, place in parked:
        shutil.rmtree(place, ignore_errors=True)
        shutil.move(str(f), place)
    shutil.rmtree(folder, ignore_errors=True)
    if recreate or parked:
        folder.mkdir(parents=True)
    for f, place in parked:
        shutil.move(str(place), f)


def collect_run(run: Run, job: Job, returncode: int, wall_seconds: float, context: dict[str, Any],
                replaces: dict[str, Any] | None = None, write: bool = True) -> dict[str, Any]:
    """Copy a finished subprocess's record and figures for ``run`` (of ``job``) into ``results_dir`` and write its
    run record there: ``failed`` without a record or on a non-zero exit; ``stopped`` when it says finished short of
    the steps it was asked for. The ``machine`` block is the one the process wrote (``repro.record.machine``), else
    this process's view of the machine. A single run keeps its ``in_progress`` checkpoint for the next ``repro
    reproduce`` either way; an ensemble member's record also names its mates and the job's command (``ensemble``).
    ``wall_seconds`` is that of every process of the run: ``earlier_wall_seconds`` (those before this one, each to
    its last checkpoint, from ``resumes.json``: ``note_resume``; 0 if none; null if unknown, when ``wall_seconds`` is
    this process's alone) plus this process's ``wall_seconds`` as its launcher timed it. ``replaces``: the record
    this one replaces, whose ``length_history`` it keeps (``shorter_runs``). ``write=False``: the record only, with
    nothing in ``results_dir`` touched."""
    work, out, root = run.work_dir, run.results_dir, run.spec.root
    config_path = work / "config.yaml"
    record = read_record(work) or {}
    if "machine" not in record:  # the process wrote no record (it crashed): this machine, as this process sees it
        record["machine"] = {**machine(), "torch_threads": None}  # the child's threads are not known here
    record["config"] = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    status = status_of(record)
    if status is None or (returncode != 0 and status is Status.FINISHED):
        record["status"] = Status.FAILED.value
    elif status is Status.STOPPED and "stop_reason" not in record:
        record["status"] = Status.STOPPED.value
        record["stop_reason"] = f"ended at generator step {record.get('generator_steps')} of {steps_asked(record)}"
    if status_of(record) in (Status.FAILED, Status.STOPPED):
        stderr = job.work_dir / "stderr.log"
        log = stderr.read_text(errors="replace").splitlines() if stderr.exists() else []
        record["error_tail"] = log[-15:]
        record["returncode"] = returncode
        record["error"] = failure_cause(record)
    resumes = read_json(job.in_progress_dir / "resumes.json") or {}
    earlier = earlier_wall_seconds(resumes)
    figures = [str(png.relative_to(work)) for png in sorted(work.rglob("*.png"))]
    roles = path_roles(root)  # records name paths by role, never by this machine's absolute paths
    if write:
        # a failed run keeps its checkpoint (the next `repro reproduce` continues or re-evaluates it); a committed
        # final state stays beside the record
        keep = [run.in_progress_dir] if not job.ensemble and status_of(record) not in DONE else []
        _renew(out, [*keep, final_state_dir(job)], run.work_dir)
        for name in figures:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / name, out / name)
        if config_path.exists():
            (out / "config.yaml").write_text(portable_text(config_path.read_text(), roles))
        if (work / "metrics.csv").exists():
            stitch_logs([*sorted(work.glob("metrics.part*.csv")), work / "metrics.csv"], out / "train_log.csv")
    checkpoints = sorted((p for p in job.work_dir.rglob("*.ckpt") if FINAL_STATE not in p.parts),
                         key=lambda p: p.stat().st_mtime)
    steps = record.get("generator_steps")
    record.update(
        table=run.spec.name, row=run.row.id, seed=run.seed, returncode=returncode,
        wall_seconds=round(wall_seconds + (earlier or 0.0), 2),
        earlier_wall_seconds=None if earlier is None else round(earlier, 2),
        seconds_per_generator_step=(record["train_seconds"] / steps) if steps and "train_seconds" in record else None,
        command="repro fit " + shlex.join(run.fit_args()).replace(str(root) + os.sep, ""),
        figures=figures, checkpoint=relative(checkpoints[-1], root) if checkpoints else None,
        run_dir=relative(work, root), resumed_at_steps=resumes.get("steps", []), **context,
    )
    history = length_history(replaces, record["config"])
    if history:
        record[SHORTER_RUNS] = history
    if job.ensemble:  # wall and train seconds are the whole job's: K members shared them
        record["ensemble"] = {"size": len(job.runs), "seeds": job.seeds, "command": job.recorded_command()}
    if write:
        write_record(portable(record, roles), out)
    return record


def stitch_logs(parts: list[Path], target: Path) -> None:
    """One training log from the CSV logs of a run's segments (oldest first): rows a segment logged after
    its last checkpoint, which the next segment logged again, are taken from the later segment. A row cut
    short by a kill mid-write (missing fields, or a step that is not a number) is dropped."""
    tables = []
    for part in parts:
        with part.open(newline="") as f:
            tables.append([r for r in csv.DictReader(f) if None not in r.values() and r.get("step", "").isdigit()])
    rows: list[dict[str, str]] = []
    for table in reversed(tables):
        first = min((int(r["step"]) for r in rows), default=None)
        rows = [r for r in table if first is None or int(r["step"]) < first] + rows
    keys = sorted({k for table in tables for r in table for k in r})
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def start(job: Job, env: dict[str, str], extra: list[str] | tuple[str, ...] = ()) -> JobProcess:
    """Start ``job``'s ``repro fit`` (plus ``extra`` arguments that change no result, e.g. ``Job.wandb_args``):
    continuing from its in-progress checkpoint if it has one, else fresh in clean folders (removing the row's
    ensemble job folders that share a seed with it: their state is superseded)."""
    ckpt = job.resume_checkpoint()
    if ckpt is None:
        shutil.rmtree(final_state_dir(job), ignore_errors=True)  # committed beside the records (or under work_dir)
        for folder in dict.fromkeys([job.work_dir, *(r.work_dir for r in job.runs)]):
            if folder.exists():
                shutil.rmtree(folder)
        for seeds, folder in job_folders(job.spec, job.row).items():
            if folder != job.results_dir and set(seeds) & set(job.seeds):
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(job.spec.runs_dir / job.row.id / folder.name, ignore_errors=True)
    else:
        note_resume(job)
        for run in job.runs:
            log = run.work_dir / "metrics.csv"
            if log.exists():  # Lightning's CSV logger deletes it on start: keep it as a part, stitched by `collect`
                log.rename(run.work_dir / f"metrics.part{len(list(run.work_dir.glob('metrics.part*.csv'))):03d}.csv")
    job.work_dir.mkdir(parents=True, exist_ok=True)
    return start_process([*job.command(ckpt=ckpt), *extra], job.spec.root, env, job.work_dir / "stdout.log",
                         job.work_dir / "stderr.log", append=ckpt is not None, devices=job.row.devices)


def note_resume(job: Job) -> None:
    """Add a resume to the job's ``resumes.json``: the step its checkpoint is at (``steps``, one per resume) and the
    wall seconds of the processes before it, to their last save (``earlier_wall_seconds``: the checkpoint's count,
    ``repro.callbacks.resumable``; null when the checkpoint predates it), which ``collect_run`` adds to the next
    process's own timing."""
    progress = read_json(job.in_progress_dir / "progress.json") or {}
    resumes = read_json(job.in_progress_dir / "resumes.json") or {"steps": []}
    resumes["steps"].append(progress.get("generator_steps"))
    resumes["earlier_wall_seconds"] = progress.get("wall_seconds")
    write_json_atomic(resumes, job.in_progress_dir / "resumes.json")


def earlier_wall_seconds(resumes: dict[str, Any]) -> float | None:
    """The wall seconds of a job's processes before its current one (0 for a job that never resumed; None: unknown,
    a resume noted before the count or from a checkpoint that predates it)."""
    if not resumes.get("steps"):
        return 0.0
    earlier = resumes.get("earlier_wall_seconds")
    return float(earlier) if isinstance(earlier, (int, float)) and not isinstance(earlier, bool) else None


def resume_label(job: Job) -> str:
    """How the job starts: fresh (""), continuing training (a finished run's to a new length, or an unfinished
    one's), or only evaluating (its checkpoint is at its length)."""
    if job.resume_checkpoint() is None:
        return ""
    extending = extension_label(job)
    if extending:
        return extending
    progress = read_json(job.in_progress_dir / "progress.json") or {}
    done, asked = progress.get("generator_steps"), progress.get("max_steps")
    complete = isinstance(done, int) and isinstance(asked, int) and 0 < asked <= done
    return " (evaluating only)" if complete else " (resumed)"


def print_result(record: dict[str, Any], console: Console) -> None:
    """One line per run as it ends: status, name, wall time, metrics (or the failure's cause)."""
    status = status_of(record)
    colour = {Status.FINISHED: "green", Status.DIVERGED: "yellow"}.get(status, "red")
    tail = record["error"] if status in (Status.FAILED, Status.STOPPED) else json.dumps(record.get("metrics", {}))
    console.print(Text.assemble((f"{record['status']:>9}", colour),
                                f" {record['row']}/seed{record['seed']}  {record['wall_seconds']:.0f}s  {tail}"),
                  soft_wrap=True)

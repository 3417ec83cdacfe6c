"""Lengthening finished runs: a run whose record is stale only because its table's ``trainer.max_steps`` grew
continues from its final state to the new length instead of retraining from step 0.

Why it is the same run. A run reaches ``max_steps`` and, before its final evaluation, writes its exact-resume
checkpoint (``repro.callbacks.resumable``): weights, optimizers, EMA, RNG streams, loader position, the curve
points so far. When no setting depends on the planned length (``GANModule.LENGTH_DEPENDENT``: ``lr_decay`` decays
to 0 at ``max_steps``; EMA start, TAN's ``temper_steps``, ``n_dis`` are step counts), the first N updates of a
longer run are the N-update run, so continuing that checkpoint to the new length trains what a from-scratch run of
the new length trains, bit for bit (``tests/test_extend.py``).

Where the state lives. When a job finishes, its ``in_progress`` folder (under ``results/``, committed) is kept as
``final_state/`` in the job's folder under ``runs/`` (git-ignored): ``runs/tables/<table>/<row>/seed<k>/final_state/``,
an ensemble job's ``runs/tables/<table>/<row>/ensemble_<seeds>/final_state/`` (one checkpoint for all members).
A spec that sets ``commit_final_states`` keeps it under ``results/`` instead, beside the run's record
(``results/<table>/<row>/seed<k>/final_state/``, an ensemble job's ``results/<table>/<row>/ensemble_<seeds>/
final_state/``), to be committed: a fresh clone or another machine then continues the row rather than retraining
it. The files are hard links where the file system allows (no copy). A job that starts from scratch removes its
folder under ``runs/`` and its final state, wherever it lives.

What continues. ``--rerun-stale`` continues a stale run (every member of its ensemble job) when: the keys that
differ are ``trainer.max_steps`` (grown) and at most ``evaluation.curve_points``; its record says finished; its
model declares no length-dependent setting in use (``model_answers(..., "length", ...)``, cached for the dry-run);
its final state is at the record's step. Anything else retrains, with the reason printed. The extension is a
resume from that state: ``in_progress/`` gets the final state and an ``extension.json`` holding the old records,
the usual resume machinery runs (``repro.tables.execute``), and the new record keeps the old curve (its final
point too) plus the points of the new spacing (every ``max_steps / curve_points`` updates of the new length)
past the old end; ``train_seconds`` runs on from the checkpoint's clock (the sum); ``extended_from_steps`` lists
the lengths it grew from and ``extended_from_commits`` the code that trained them. A killed extension continues
from its ``in_progress/`` checkpoint like any run.

What a retrained run keeps. A run that cannot continue (its model's schedule is tied to the length) is retrained
from step 0 at the new length, and its new record keeps the finished shorter run's final metrics under
``shorter_runs`` (``length_history``; with those it carried), so a page can judge length convergence, final at L
against final at the shorter length, where a decaying schedule makes the curve's own tail no evidence
(``repro.tables.curves``).
"""
from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.portable import path_roles, portable
from repro.record import Status, checkpoint_in, read_json, status_of, write_json_atomic, write_record
from repro.tables.jobs import Job, job_folders
from repro.tables.plan import Records, Run
from repro.tables.resolve import model_answers
from repro.tables.stale import Stale, differing_keys

__all__ = ["FINAL_STATE", "EXTENSION_FILE", "LENGTH_KEYS", "SHORTER_RUNS", "Extension", "length_history",
           "final_state_dir", "saved_final_state", "length_dependence", "length_dependences", "plan_extensions",
           "begin_extension", "discard_extensions", "void_retimed", "keep_final_state", "finish_extension",
           "extension_label", "steps_value", "planned_length"]

FINAL_STATE = "final_state"  # a finished job's exact-resume state, in its folder under runs/
EXTENSION_FILE = "extension.json"  # in in_progress/: the job continues a finished run (the old records)
# The keys that may differ for a finished run to continue at a new length.
LENGTH_KEYS = ("trainer.max_steps", "evaluation.curve_points", "evaluation.tail_points")
SHORTER_RUNS = "shorter_runs"  # in a record: finished runs of its settings at shorter lengths that it replaced


@dataclass(frozen=True)
class Extension:
    """A job that continues finished runs from the state at ``from_steps`` (their old length)."""

    job: Job
    from_steps: int
    under_way: bool  # an earlier extension left its in_progress/ checkpoint: it continues from there


def final_state_dir(job: Job) -> Path:
    """Where a finished job keeps its exact-resume state: under ``results/`` beside its records when its spec sets
    ``commit_final_states``, else in its folder under ``runs/``."""
    if job.spec.commit_final_states:
        return (job.results_dir or job.runs[0].results_dir) / FINAL_STATE
    return job.work_dir / FINAL_STATE


def saved_final_state(job: Job) -> Path:
    """Where a finished job's final state is read from: ``final_state_dir``, or its folder under ``runs/`` when its
    spec turned ``commit_final_states`` on after the job finished there (the continued job then keeps its new final
    state under ``results/``)."""
    committed = final_state_dir(job)
    kept = job.work_dir / FINAL_STATE
    return kept if checkpoint_in(committed) is None and checkpoint_in(kept) is not None else committed


def length_dependence(config: dict[str, Any]) -> list[str]:
    """The settings of a row's resolved ``config`` that tie its training to ``trainer.max_steps``
    (``GANModule.length_dependence``); a model class that is no ``GANModule`` declares none, so counts as tied."""
    class_path = str(config["model"].get("class_path", ""))
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    declared = getattr(cls, "length_dependence", None)
    if declared is None:
        return [f"model.class_path: {class_path} declares no length-dependent settings (not a GANModule)"]
    return list(declared(config["model"].get("init_args") or {}))


def length_dependences(configs: dict[str, dict[str, Any] | None], parse: str = "always"
                       ) -> tuple[dict[str, list[str]], list[str]]:
    """``length_dependence`` per row, cached like a parse (``resolve.model_answers``), and the rows unchecked."""
    return model_answers(configs, "length", length_dependence, parse)


def steps_value(value: Any) -> int | None:
    """``value`` as a number of updates: a positive int, else None (unset, unlimited -1, or not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def planned_length(config: dict[str, Any] | None) -> int | None:
    """A resolved config's ``trainer.max_steps``."""
    return steps_value(((config or {}).get("trainer") or {}).get("max_steps"))


def length_history(old: dict[str, Any] | None, config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``shorter_runs`` of the record that replaces ``old`` with a run of resolved ``config``: ``old``'s own,
    plus ``old`` itself when it finished; each entry (length, commit, final metrics and the config it trained with)
    kept when only ``LENGTH_KEYS`` differ from ``config`` and it is shorter than ``config``'s length; by length, one
    entry per length (the later record's). Without a ``config`` (a run that failed before writing it) every entry is
    carried as it is, for the next record to judge."""
    if not old:
        return []
    entries = list(old.get(SHORTER_RUNS) or [])
    if status_of(old) is Status.FINISHED and steps_value(old.get("generator_steps")) is not None:
        entries.append({"generator_steps": old["generator_steps"], "git_commit": old.get("git_commit"),
                        "metrics": old.get("metrics") or {}, "config": old.get("config")})
    if isinstance(config, dict):
        new = planned_length(config)
        entries = [e for e in entries if isinstance(e.get("config"), dict) and new is not None
                   and e["generator_steps"] < new
                   and all(k in LENGTH_KEYS for k in differing_keys(e["config"], config))]
    history = {e["generator_steps"]: e for e in entries}
    return [history[k] for k in sorted(history)]


def _job_of(run: Run, record: dict[str, Any], planned: dict[tuple[str, int], Run]) -> Job | str:
    """The job that trained ``run`` (its ensemble's, from the record), or why it cannot be formed now."""
    seeds = (record.get("ensemble") or {}).get("seeds")
    if not seeds:
        return Job((run,))
    missing = [s for s in seeds if (run.row.id, s) not in planned]
    if missing:
        return f"its ensemble job's seeds {', '.join(map(str, missing))} are not planned (--seeds)"
    return Job(tuple(planned[(run.row.id, s)] for s in seeds))


def _state(job: Job, from_steps: int, new_steps: int) -> bool | str:
    """Whether an extension is under way (True) or starts from the final state (False), or why neither can. Under
    way: its ``in_progress/`` continues this record toward ``new_steps``, or was prepared from the final state and has
    not trained yet (then it is that state: all a fresh clone has of it where the state was not committed)."""
    under_way = read_json(job.in_progress_dir / EXTENSION_FILE)
    progress = read_json(job.in_progress_dir / "progress.json") or {}
    if (under_way and under_way.get("from_steps") == from_steps and job.resume_checkpoint()
            and (progress.get("max_steps") == new_steps or progress.get("generator_steps") == from_steps)):
        return True
    saved = saved_final_state(job)
    final = read_json(saved / "progress.json") or {}
    if checkpoint_in(saved) is None:
        return ("no saved final state (finished before final states were kept, or on another machine or in a removed "
                "runs/ folder: a spec that sets commit_final_states keeps them under results/, in git)")
    if final.get("generator_steps") != from_steps:
        return f"its saved state is at step {final.get('generator_steps')}, not at its record's {from_steps}"
    return False


def _why_not(record: dict[str, Any], now: dict[str, Any] | None, dependence: list[str] | None,
             keys: tuple[str, ...]) -> str | None:
    """Why a stale run cannot continue from its final state (None: it can, as far as its own record goes); ``keys``:
    its differing config keys (``Stale.keys``)."""
    if now is None:
        return "its row's config is not parsed yet (--check-configs)"
    other = [k for k in keys if k not in LENGTH_KEYS]
    if other:
        return f"{', '.join(other)} changed"
    old, new = steps_value(record.get("generator_steps")), planned_length(now)
    if status_of(record) is not Status.FINISHED:
        return f"it {record.get('status')}: no final state to continue"
    if old is None or new is None or new <= old:
        return f"trainer.max_steps did not grow ({old} → {new}): the points it asks for are in the past"
    if dependence is None:
        return "its model's length-dependent settings are not checked yet (--check-configs)"
    if dependence:
        return f"{'; '.join(dependence)} depends on trainer.max_steps"
    return None


def plan_extensions(found: list[Stale], records: Records, configs: dict[str, dict[str, Any]],
                    dependence: dict[str, list[str]]) -> tuple[list[Extension], dict[str, str]]:
    """The jobs that continue stale runs from their final state, and for every stale run what ``--rerun-stale``
    does with it (by run name): ``extends from N`` or ``reruns: <why>``. ``dependence``: per row id, its model's
    length-dependent settings (a row missing: not checked). An ensemble job continues only if all its members can."""
    by_name = {run.name: record for run, record in records if record}
    planned = {(run.row.id, run.seed): run for run, _ in records}
    actions: dict[str, str] = {}
    jobs: dict[str, Job] = {}  # by run name: the job each run that may continue would continue in
    for item in found:
        record = by_name[item.run.name]
        why = _why_not(record, configs.get(item.run.row.id), dependence.get(item.run.row.id), item.keys)
        job = _job_of(item.run, record, planned) if why is None else why
        if isinstance(job, str):
            actions[item.run.name] = f"reruns: {job}"
        else:
            jobs[item.run.name] = job
    extensions = []
    for job in {tuple(r.name for r in job.runs): job for job in jobs.values()}.values():
        names = [r.name for r in job.runs]
        steps = by_name[names[0]]["generator_steps"]
        mates = [n for n in names if n not in jobs or [r.name for r in jobs[n].runs] != names
                 or by_name[n].get("generator_steps") != steps]
        state = (f"its ensemble mates {', '.join(mates)} cannot continue with it" if mates
                 else _state(job, steps, configs[job.row.id]["trainer"]["max_steps"]))
        if isinstance(state, str):
            actions |= {name: f"reruns: {state}" for name in names}
            continue
        extensions.append(Extension(job, steps, state))
        actions |= {name: f"extends from {steps}" + (" (continuing its extension under way)" if state else "")
                    for name in names}
    return extensions, actions


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _mirror(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (hard links; every writer of these files replaces, never edits)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(EXTENSION_FILE, "*.tmp"))


def begin_extension(extension: Extension, records: Records) -> None:
    """Put the job's final state in its ``in_progress/`` folder with ``extension.json`` (the old records), so the job
    resumes from it (``repro.tables.execute.start``); an extension under way is left as it is."""
    if extension.under_way:
        return
    job = extension.job
    _mirror(saved_final_state(job), job.in_progress_dir)
    names = {run.name for run in job.runs}
    old = {str(run.seed): record for run, record in records if run.name in names}
    write_json_atomic({"from_steps": extension.from_steps, "records": old}, job.in_progress_dir / EXTENSION_FILE)


def discard_extensions(runs: list[Run]) -> None:
    """Remove the ``in_progress/`` folders of extensions under way that would continue ``runs`` (their own, or their
    ensemble jobs'): these runs retrain instead (their spec changed again since), so that state is void."""
    for run in runs:
        jobs = [f / "in_progress" for seeds, f in job_folders(run.spec, run.row).items() if run.seed in seeds]
        for folder in (run.in_progress_dir, *jobs):
            if (folder / EXTENSION_FILE).exists():
                shutil.rmtree(folder)


def void_retimed(jobs: list[Job], configs: dict[str, dict[str, Any]], dependence: dict[str, list[str]]) -> list[str]:
    """Remove the ``in_progress/`` checkpoints of unfinished ``jobs`` that were started for another length than they
    are planned for now, where their schedule is tied to the length (``dependence`` per row id; a row missing: not
    checked, so counted as tied): resumed under the new length they would train a mix of two schedules, so they
    restart from step 0. A length-free job continues (its first updates are those of any length). What was
    removed, one line each."""
    out = []
    for job in jobs:
        progress = read_json(job.in_progress_dir / "progress.json") or {}
        planned = planned_length(configs.get(job.row.id))
        started = steps_value(progress.get("max_steps"))
        if job.resume_checkpoint() is None or started is None or planned is None or started == planned:
            continue
        tied = dependence.get(job.row.id, ["its model's length-dependent settings (not checked)"])
        if tied:
            shutil.rmtree(job.in_progress_dir)
            out.append(f"{job.name}: restarts from step 0: its checkpoint (step {progress.get('generator_steps')}) "
                       f"was started for {started:,} updates, now {planned:,}, and {'; '.join(tied)} depends on "
                       "trainer.max_steps")
    return out


def keep_final_state(job: Job, finished: bool) -> None:
    """After the job's process: when it ``finished`` (every run at its length), its ``in_progress/`` state (at its
    last step) is kept as ``final_state/``, replacing an older one."""
    if finished and job.resume_checkpoint() is not None:
        _mirror(job.in_progress_dir, final_state_dir(job))


def _merged(old: list[list[Any]], new: list[list[Any]]) -> list[list[Any]]:
    """Curve points by step: the new run's, plus the old record's at steps it lacks (its final point)."""
    steps = {p[0] for p in new}
    return sorted([p for p in old if p[0] not in steps] + list(new), key=lambda p: p[0])


def finish_extension(run: Run, record: dict[str, Any], extension: dict[str, Any]) -> dict[str, Any]:
    """``run``'s record after an extension that ended finished or diverged (``extension``: the job's
    ``extension.json``; one that failed or stopped leaves the old records in place: ``repro.tables.execute.collect``):
    the old curve points and shorter runs kept, the lengths and commits it grew from noted; written over the one
    ``collect_run`` wrote."""
    old = (extension.get("records") or {}).get(str(run.seed))
    if not old:
        return record
    out = dict(record)
    if old.get(SHORTER_RUNS):
        out[SHORTER_RUNS] = old[SHORTER_RUNS]
    curves = record.get("curves") or {}
    out["curves"] = {k: _merged((old.get("curves") or {}).get(k) or [], points) for k, points in curves.items()}
    if "curve_seconds" in record:
        out["curve_seconds"] = _merged(old.get("curve_seconds") or [], record["curve_seconds"])
    out["extended_from_steps"] = [*old.get("extended_from_steps", []), extension["from_steps"]]
    out["extended_from_commits"] = [*old.get("extended_from_commits", []), old.get("git_commit")]
    if out != record:
        write_record(portable(out, path_roles(run.spec.root)), run.results_dir)
    return out


def extension_label(job: Job) -> str | None:
    """`` (extending from step N)`` for a job that continues a finished run, else None."""
    extension = read_json(job.in_progress_dir / EXTENSION_FILE)
    return None if extension is None else f" (extending from step {extension.get('from_steps')})"

"""Stale records: a finished run is reused only if it ran what the spec would run now.

A run's inputs are its resolved config (the row's config file, the spec's and the row's overrides, every
default) and the code. Both are compared with what a record holds:

- **Config** (spec, override and config-file changes alike): the record's resolved ``config`` against the row
  parsed now (``resolve.check_configs``), key by key. Keys that name where this run or this machine keeps
  its files, or that change no result, are left out (``RUN_SPECIFIC``); keys only one side has are a code
  change (a parameter added or removed), not a config change, except a key the spec or row sets that the record
  lacks whose value there differs from the row's without that setting (its default or config-file value: what the
  record's code ran), and a model setting newer than the record that a config file sets to other than the
  parameter's default (``repro.setting_defaults``, read through the cached model answers of
  ``resolve.model_defaults``: the planner never imports the classes itself); paths compare by file name (a record
  names them relative to the project or by role, ``$REPRO_DATA_DIR/...``; a parse gives absolute paths).
- **Code**: the record's ``git_commit`` against this checkout: the files under ``repro/`` that differ.

Policy. A config difference refuses reuse: ``repro reproduce`` stops before training and lists the stale runs
with their differing keys; ``--rerun-stale`` retrains them (the new record replaces the old; a run whose spec
only grew ``trainer.max_steps`` continues from its final state instead, where that gives the same run:
``repro.tables.extend``) and ``--accept-stale`` keeps them (the page lists them and their differences). A table
whose numbers were made with other settings than its spec states is a wrong result, and it is cheap to detect
exactly. A code difference is reported (a warning naming the commits and the changed files) but forces nothing:
refactors that keep behaviour are the norm, every table costs hours, and which code change alters a
result cannot be told from a diff. It is printed, not written on the page: a page is a pure function of
the spec and the records (so regenerating it rewrites the same bytes), and a line that depended on the
checkout's HEAD would rewrite every page at every commit. ``--report-only`` never refuses; it marks.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from repro.tables.plan import Records, Run

__all__ = ["RUN_SPECIFIC", "Stale", "Unset", "added_keys", "differing_keys", "newer_settings", "config_differences",
           "explicit_keys", "flat_keys", "stale_runs", "code_changes", "stale_message", "code_warning"]

# Keys that differ between the runs of one row, or between machines, or that change no result: the seed
# (each run has its own), where logs, checkpoints, data and caches are, resumable-checkpoint pacing,
# progress bar and W&B logging.
RUN_SPECIFIC = ("seed_everything", "trainer.logger", "trainer.enable_progress_bar", "ckpt_path", "resumable",
                "wandb", "data.data_root", "evaluation.cache_dir")
_SHOWN = 8  # changed files named per commit


@dataclass(frozen=True)
class Stale:
    """A finished run whose recorded config differs from the one the spec gives now."""

    run: Run
    differences: list[str]  # "key: recorded → now"
    keys: tuple[str, ...]  # the differing dotted keys (``differing_keys``), in the order of ``differences``


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out |= _flatten(sub, f"{prefix}{key}.")
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def _comparable(value: Any) -> Any:
    """Lists for tuples, and a path (a string with a ``/``: absolute, relative, or named by its role such as
    ``$REPRO_DATA_DIR/...`` as records write them) by its file name."""
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, str) and "/" in value:
        return PurePosixPath(value).name
    return value


def _run_specific(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUN_SPECIFIC)


def flat_keys(config: dict[str, Any], prefix: str) -> list[str]:
    """The dotted keys of the leaves of a nested ``config`` (an empty dict is a leaf), each after ``prefix.``."""
    return [f"{prefix}.{key}" for key in _flatten(config)]


def _holds(flat: dict[str, Any], key: str) -> bool:
    return key in flat or any(k.startswith(key + ".") for k in flat)


def added_keys(recorded: dict[str, Any], now: dict[str, Any], explicit: Iterable[str]) -> list[str]:
    """The ``explicit`` keys (those the spec or row sets) that only the config now holds, run-specific ones left out."""
    old, new = _flatten(recorded), _flatten(now)
    return [key for key in explicit if _holds(new, key) and not _holds(old, key) and not _run_specific(key)]


def _under(flat: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: _comparable(v) for k, v in flat.items() if k == key or k.startswith(key + ".")}


def differing_keys(recorded: dict[str, Any], now: dict[str, Any], explicit: Iterable[str] = (),
                   unset: dict[str, Any] | None = None) -> list[str]:
    """The dotted keys both resolved configs hold with different values, and the ``added_keys`` whose value now
    differs from ``unset``'s (the row resolved without them; None: unknown, each counts), sorted."""
    old, new = _flatten(recorded), _flatten(now)
    both = [key for key in old.keys() & new.keys() if _comparable(old[key]) != _comparable(new[key])]
    added = added_keys(recorded, now, explicit)
    if unset is not None:
        bare = _flatten(unset)
        added = [key for key in added if _under(new, key) != _under(bare, key)]
    return sorted(key for key in {*both, *added} if not _run_specific(key))


def newer_settings(recorded: dict[str, Any], now: dict[str, Any], explicit: Iterable[str],
                   defaults: dict[str, Any]) -> list[str]:
    """The keys only the config now holds that neither the spec nor the row sets (so a config file does), whose value
    differs from the parameter's default in ``defaults`` (by dotted key; a key missing there is not judged): the
    record's code, which lacked the parameter, ran that default."""
    old, new, set_here = _flatten(recorded), _flatten(now), list(explicit)
    return [key for key, value in new.items() if key not in old and key in defaults and not _run_specific(key)
            and not any(key == k or key.startswith(k + ".") for k in set_here)
            and _comparable(value) != _comparable(defaults[key])]


def config_differences(recorded: dict[str, Any], now: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """``key: recorded → now`` for each of ``keys`` (``differing_keys``; ``(not in the record)`` for an added one)."""
    old, new = _flatten(recorded), _flatten(now)
    return [f"{key}: {old[key]!r} → {new[key]!r}" if key in old else f"{key}: (not in the record) → {new.get(key)!r}"
            for key in keys]


def explicit_keys(run: Run) -> list[str]:
    """The dotted keys the run's spec and row set."""
    return [*run.spec.overrides, *run.row.overrides]


Unset = Callable[[Run, list[str]], "dict[str, Any] | None"]  # (run, keys) -> its row resolved without setting them


def stale_runs(records: Records, configs: dict[str, dict[str, Any]], without: Unset | None = None,
               defaults: dict[str, dict[str, Any]] | None = None) -> list[Stale]:
    """The done runs whose recorded config differs from ``configs[row id]`` (the row resolved now), or lacks a
    setting the spec asks for whose value differs from ``without(run, keys)``'s (asked only for such keys; no
    ``without``, or None from it: each counts), or lacks one a config file sets to other than its default
    (``newer_settings``; ``defaults`` per row id, a row missing: not judged); a record without a config, or a row
    not in ``configs``, cannot be compared and is not called stale."""
    out = []
    for run, record in records:
        recorded = (record or {}).get("config")
        if isinstance(recorded, dict) and run.row.id in configs:
            now, explicit = configs[run.row.id], explicit_keys(run)
            added = added_keys(recorded, now, explicit)
            unset = without(run, added) if added and without is not None else None
            keys = sorted({*differing_keys(recorded, now, explicit, unset),
                           *newer_settings(recorded, now, explicit, (defaults or {}).get(run.row.id) or {})})
            if keys:
                out.append(Stale(run, config_differences(recorded, now, keys), tuple(keys)))
    return out


def code_changes(root: Path, records: Records) -> dict[str, list[str] | None]:
    """For each commit the records were trained at whose code is not this checkout's: the files under
    ``repro/`` that differ from it now (working tree included), or None for a commit this repository does
    not have. Records without a commit are not compared."""
    commits = sorted({str(r["git_commit"]) for _, r in records if r and r.get("git_commit")})
    out: dict[str, list[str] | None] = {}
    for commit in commits:
        done = subprocess.run(["git", "-C", str(root), "diff", "--name-only", commit, "--", "repro"],
                              capture_output=True, text=True)
        files = done.stdout.split() if done.returncode == 0 else None
        if files != []:
            out[commit] = files
    return out


def stale_message(table: str, stale: list[Stale], actions: dict[str, str] | None = None) -> str:
    """The refusal: each stale run with its differing keys (and what ``--rerun-stale`` does with it, from
    ``actions`` by run name: ``extends from N`` or ``reruns: why``; ``repro.tables.extend``), and the two ways out."""
    lines = [f"{table}: {len(stale)} finished run(s) were trained with other inputs than the spec gives now "
             "(spec, row overrides or config file changed):"]
    for item in stale:
        action = (actions or {}).get(item.run.name)
        lines.append(f"  {item.run.name}: " + "; ".join(item.differences) + (f" -> {action}" if action else ""))
    lines.append(f"Bring them up to date (retrained, or continued where only the length grew; records replaced): "
                 f"repro reproduce {table} --rerun-stale\n"
                 f"Keep them (the page lists them as stale): repro reproduce {table} --accept-stale")
    return "\n".join(lines)


def code_warning(table: str, records: Records, changes: dict[str, list[str] | None]) -> str | None:
    """One warning naming the commits whose code differs from this checkout's, with their runs and changed
    files under ``repro/``; None when every recorded commit matches."""
    if not changes:
        return None
    parts = []
    for commit, files in changes.items():
        runs = sum(1 for _, r in records if r and r.get("git_commit") == commit)
        if files is None:
            parts.append(f"{runs} run(s) at {commit[:10]} (commit not in this repository)")
            continue
        shown = ", ".join(files[:_SHOWN]) + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")
        parts.append(f"{runs} run(s) at {commit[:10]} ({len(files)} file(s) under repro/ changed since: {shown})")
    return (f"warning: {table}: records trained with other code than this checkout's, kept (code changes are "
            f"reported, not rerun): " + "; ".join(parts) + f". To retrain a run, delete its folder under "
            f"results/{table}/ and run `repro reproduce {table}` again.")

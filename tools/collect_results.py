"""Bring a queue checkout's finished runs (and, on request, its checkpoints under way) into this checkout.

The long-run queue trains in its own checkout (tools/queue.sh); results land in this one, to be committed. Per table:
- a finished or diverged run folder of the queue replaces this checkout's folder of the same run when they differ
  (its ``in_progress/`` left out; its ``final_state/``, where the spec commits final states, brought with it);
- an ensemble job's ``final_state/`` (``results/<table>/<row>/ensemble_<seeds>/final_state/``) is brought when it
  differs, and removed here when the queue no longer has it (its job was retrained or regrouped);
- an ``in_progress/`` folder here that the queue no longer has is removed (its job finished or was regrouped);
- with ``--in-progress``, the queue's ``in_progress/`` folders are copied here (to commit them at a session's stop,
  so that another machine continues the runs: README, "Long runs").
Then regenerate the page: ``repro reproduce <table> --report-only``.

Usage: python tools/collect_results.py QUEUE_CHECKOUT TABLE [TABLE ...] [--in-progress]
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
from pathlib import Path

from repro.record import DONE, read_record, status_of
from repro.tables.extend import FINAL_STATE
from repro.tables.jobs import ENSEMBLE_PREFIX

IN_PROGRESS = "in_progress"


def _differ(a: Path, b: Path) -> bool:
    """Whether two run folders differ in any file, ``in_progress/`` aside."""
    if not b.is_dir():
        return True
    cmp = filecmp.dircmp(a, b, ignore=[IN_PROGRESS])
    stack = [cmp]
    while stack:
        c = stack.pop()
        if c.left_only or c.right_only or c.funny_files:
            return True
        if filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)[1:] != ([], []):
            return True
        stack.extend(c.subdirs.values())
    return False


def collect(queue: Path, here: Path, table: str, in_progress: bool = False) -> list[str]:
    """Bring ``table``'s runs from ``queue`` into ``here`` as the module says; the lines it did."""
    done, src, dst = [], queue / "results" / table, here / "results" / table
    for record in sorted(src.glob("*/*/metrics.json")):
        folder = record.parent
        if status_of(read_record(folder)) not in DONE:
            continue
        target = dst / folder.relative_to(src)
        if _differ(folder, target):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(IN_PROGRESS))
            done.append(f"copied {target.relative_to(here)}")
    for state in sorted(src.glob(f"*/{ENSEMBLE_PREFIX}*/{FINAL_STATE}")):
        target = dst / state.relative_to(src)
        if _differ(state, target):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(state, target)
            done.append(f"copied {target.relative_to(here)}")
    for stale in sorted([*dst.glob(f"*/*/{IN_PROGRESS}"), *dst.glob(f"*/{ENSEMBLE_PREFIX}*/{FINAL_STATE}")]):
        if not (src / stale.relative_to(dst)).is_dir():
            shutil.rmtree(stale)
            done.append(f"removed {stale.relative_to(here)} (not in the queue any more)")
    if in_progress:
        for folder in sorted(src.glob(f"*/*/{IN_PROGRESS}")):
            target = dst / folder.relative_to(src)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
            done.append(f"copied {target.relative_to(here)}")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", type=Path, help="the queue's checkout (holding results/<table>/)")
    parser.add_argument("tables", nargs="+")
    parser.add_argument("--in-progress", action="store_true", help="also copy the checkpoints of runs under way")
    parser.add_argument("--here", type=Path, default=Path(__file__).resolve().parents[1], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for table in args.tables:
        if not (args.queue / "results" / table).is_dir():
            parser.error(f"{args.queue}/results/{table} does not exist: is {args.queue} the queue's checkout?")
        lines = collect(args.queue, args.here, table, args.in_progress)
        print("\n".join(lines) if lines else f"{table}: nothing to bring")


if __name__ == "__main__":
    main()

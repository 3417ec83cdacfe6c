"""Fill the ``shorter_runs`` of a table's committed records from their git history (issue 20).

Since the runner keeps them itself (``repro.tables.extend.length_history``), this is only for records whose shorter
runs were replaced before it did: for each finished record under ``results/<table>/``, every committed version of
that file that finished at a shorter length with the same settings otherwise (``trainer.max_steps`` and
``evaluation.curve_points`` may differ), was trained from a clean tree at ``--since`` or a later commit, becomes an
entry (its length, commit and final metrics; the newest version per length). Run from the repository root:

    python tools/length_history.py TABLE --since REV [--dry-run]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repro.portable import dumps, loads  # noqa: E402
from repro.record import RECORD_FILE, Status, read_record, status_of, write_record  # noqa: E402
from repro.tables.extend import SHORTER_RUNS, length_history  # noqa: E402


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def _descends(root: Path, commit: str | None, since: str) -> bool:
    if not commit:
        return False
    return subprocess.run(["git", "merge-base", "--is-ancestor", since, commit], cwd=root,
                          capture_output=True).returncode == 0


def versions(root: Path, path: Path) -> list[dict[str, Any]]:
    """Every committed version of the record at ``path`` in the repository at ``root``, oldest first."""
    rel = path.relative_to(root).as_posix()
    out = []
    for commit in reversed(_git(root, "log", "--format=%H", "--", rel).split()):
        try:
            out.append(loads(_git(root, "show", f"{commit}:{rel}")))
        except subprocess.CalledProcessError:  # deleted in that commit
            continue
    return out


def history_from_git(root: Path, record: dict[str, Any], path: Path, since: str) -> list[dict[str, Any]]:
    """``record``'s shorter runs: its own, plus those of its committed versions (trained at ``since`` or later)."""
    found = {h["generator_steps"]: h for h in record.get(SHORTER_RUNS) or []}
    for old in versions(root, path):
        if old.get("git_dirty") is False and _descends(root, old.get("git_commit"), since):
            found |= {h["generator_steps"]: h for h in length_history(old, record.get("config"))}
    return [found[k] for k in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--since", required=True, help="oldest commit whose training code the records may come from")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    args = parser.parse_args()
    since = _git(ROOT, "rev-parse", args.since).strip()
    for path in sorted((ROOT / "results" / args.table).glob(f"*/seed*/{RECORD_FILE}")):
        record = read_record(path.parent)
        if status_of(record) is not Status.FINISHED:
            continue
        history = history_from_git(ROOT, record, path, since)
        if dumps(history) == dumps(record.get(SHORTER_RUNS) or []):  # as written (NaN != NaN as floats)
            continue
        lengths = ", ".join(f"{h['generator_steps']:,} ({str(h['git_commit'])[:7]})" for h in history)
        print(f"{path.parent.relative_to(ROOT)}: shorter runs at {lengths}")
        if not args.dry_run:
            write_record({**record, SHORTER_RUNS: history}, path.parent)


if __name__ == "__main__":
    main()

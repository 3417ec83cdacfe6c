"""One runner per table: ``results/<table>/.runner.lock`` holds the running ``repro reproduce``'s pid and host.

The file is created exclusively (``O_EXCL``), so of two runners started at once exactly one gets it; the other
stops before training with a message naming the holder. A lock whose process is gone (same host, no such
pid, or a zombie) is stale: it is replaced, with a note. A lock from another host cannot be checked from
here: the message says how to remove it when that runner is known to be gone. A SLURM launch adds its job
ids to the file, so a user who finds the lock knows what is still queued.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from repro.tables.spec import SpecError, TableSpec

__all__ = ["LOCK_NAME", "TableLocked", "TableLock", "pid_alive"]

LOCK_NAME = ".runner.lock"


class TableLocked(SpecError):
    """Another runner holds the table's lock."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class TableLock:
    """Context manager holding ``results/<table>/.runner.lock`` for one runner."""

    def __init__(self, spec: TableSpec, note: Any = print):
        self.path = spec.results_dir / LOCK_NAME
        self.table = spec.name
        self.note = note
        self.held: dict[str, Any] = {}

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.held, f)
        return True

    def __enter__(self) -> TableLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.held = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            if self._create():
                return self
            holder = self._holder()
            if holder is None:  # being written this instant, or unreadable: look again
                time.sleep(0.2)
                holder = self._holder() or {}
            same_host = holder.get("host") == self.held["host"]
            if same_host and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"]):
                self.note(f"{self.table}: removed a stale lock of runner pid {holder['pid']} (no such process)")
                self.path.unlink(missing_ok=True)
                continue
            jobs = f"; its SLURM jobs: {', '.join(map(str, holder['jobs']))}" if holder.get("jobs") else ""
            where = "this host" if same_host else f"host {holder.get('host', '?')}"
            raise TableLocked(
                f"table {self.table!r} is being run by another runner: pid {holder.get('pid', '?')} on {where} "
                f"since {holder.get('started', '?')} (`{holder.get('command', '?')}`){jobs}. Wait for it or stop "
                f"it; if it is gone (e.g. its machine crashed), delete {self.path}")
        raise TableLocked(f"could not take the lock {self.path}; delete it if no runner is using table {self.table!r}")

    def add(self, **fields: Any) -> None:
        """Record more about this runner in the lock (e.g. ``jobs``: SLURM job ids)."""
        self.held.update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.held))
        os.replace(tmp, self.path)

    def __exit__(self, kind: type | None, err: BaseException | None, tb: TracebackType | None) -> None:
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == self.held["host"]:
            self.path.unlink(missing_ok=True)

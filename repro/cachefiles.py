"""The project's on-disk caches (under ``$REPRO_CACHE_DIR``, default ``~/.cache/repro``) and their one pruning policy.

Each cache is a folder of entry files, every one a pure function of the inputs its name hashes, so any entry may be
removed at any time: the next use recomputes it. An entry's mtime marks its last use (a hit sets it with
``mark_used``, as atime is often not kept). ``prune`` removes the entries, and the temporary files of crashed
writers (``<entry stem>.<pid>.tmp``), not used for ``max_age_days``, then the least recently used entries while the
rest exceed ``max_bytes``. Only files named as the cache names its entries are touched, so a folder shared with
other files (a user's ``evaluation.cache_dir``) keeps them. Users: ``repro.tables.resolve`` (resolved configs) and
``repro.metrics.image`` (reference features).
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Collection
from pathlib import Path

__all__ = ["cache_root", "mark_used", "prune"]

_DAY = 86400.0


def cache_root() -> Path:
    """``$REPRO_CACHE_DIR``, or ``~/.cache/repro``: the folder that holds every cache of the project."""
    base = os.environ.get("REPRO_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "repro"


def mark_used(path: Path) -> None:
    """Set ``path``'s mtime to now (a cache hit); a read-only cache is still read."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(folder: Path, suffix: str, max_age_days: float, max_bytes: int, stem: str = ".+", now: float | None = None,
          keep: Collection[Path] = ()) -> list[Path]:
    """Remove from ``folder`` the entries (files named ``<stem><suffix>``, ``stem`` a regular expression) and
    temporary files (``<stem>.<digits>.tmp``) last modified more than ``max_age_days`` before ``now``, then the least
    recently modified entries while the others exceed ``max_bytes`` in all; ``keep`` (e.g. the entry just written)
    is never removed. Returns what was removed. Files that vanish meanwhile (another process pruning) are skipped."""
    now = time.time() if now is None else now
    entry, temporary = re.compile(f"(?:{stem}){re.escape(suffix)}"), re.compile(rf"(?:{stem})\.\d+\.tmp")
    kept: list[tuple[float, int, Path]] = []
    removed: list[Path] = []
    total = 0  # bytes of the entries kept so far
    with contextlib.suppress(OSError), os.scandir(folder) as items:
        for item in items:
            is_entry = entry.fullmatch(item.name) is not None
            if not (is_entry or temporary.fullmatch(item.name)) or not item.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                st = item.stat(follow_symlinks=False)
                if Path(item.path) in keep:
                    total += st.st_size
                elif now - st.st_mtime > max_age_days * _DAY:
                    removed.append(Path(item.path))
                elif is_entry:
                    kept.append((st.st_mtime, st.st_size, Path(item.path)))
    total += sum(size for _, size, _ in kept)
    for _, size, path in sorted(kept, key=lambda k: k[0]):
        if total <= max_bytes:
            break
        removed.append(path)
        total -= size
    for path in removed:
        with contextlib.suppress(OSError):
            path.unlink()
    return removed

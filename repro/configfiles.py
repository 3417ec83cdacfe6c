"""Where ``repro fit``'s ``--config`` files are found; light (no torch, no Lightning), so the table planner can
resolve a row's inputs the way ``repro fit`` will without importing the fit layer."""
from __future__ import annotations

from pathlib import Path

from repro import REPO_ROOT
from repro.errors import UserError

__all__ = ["resolve_config", "resolve_config_args"]


def resolve_config(path: str) -> str:
    """A config path as given, or relative to the repository root."""
    if Path(path).exists():
        return path
    candidate = REPO_ROOT / path
    if candidate.exists():
        return str(candidate)
    raise UserError(f"config file {path!r} not found (looked in {Path.cwd()} and {REPO_ROOT})")


def resolve_config_args(args: list[str]) -> list[str]:
    """``args`` with every ``--config`` / ``-c`` path resolved by ``resolve_config``."""
    out = list(args)
    for i, a in enumerate(out):
        if a in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + resolve_config(a.split("=", 1)[1])
        elif a == "--ensemble" or a.startswith("--ensemble="):  # shorthand for --ensemble.size
            out[i] = "--ensemble.size" + a.removeprefix("--ensemble")
    return out

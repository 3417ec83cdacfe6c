"""Records a reader can use anywhere: strict JSON, and no absolute paths of the machine that wrote them.

- JSON: an infinite or NaN float (a reverse KL of a dropped mode is ``inf``) is written as the
  *string* ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``, never as the bare literal Python's ``json``
  writes by default, which strict parsers (``jq``, JavaScript, Go, ...) reject. A string keeps the
  value (``null`` would lose it) and every language turns it back into a float. ``loads`` reads both
  forms: the strings, and the bare literals of records written before.
- Paths: ``portable`` rewrites every absolute path in a record's strings (whole paths, and paths
  inside command lines) by its role: relative to the project root (``runs/tables/toy/...``), or
  under ``$REPRO_DATA_DIR``, ``$REPRO_CACHE_DIR``, ``$TORCH_HOME/hub``, ``$TMPDIR`` or ``~``; a path
  under none of them keeps only its last two parts, after ``<external>/``.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from repro.cachefiles import cache_root

__all__ = ["NONFINITE", "to_strict", "from_strict", "dumps", "loads", "path_roles", "portable_path", "portable_text",
           "portable"]

NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def to_strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string (``"Infinity"``, ``"-Infinity"``, ``"NaN"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: to_strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict(v) for v in value]
    return value


def from_strict(value: Any) -> Any:
    """The inverse of ``to_strict``: those three strings become floats again."""
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: from_strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_strict(v) for v in value]
    return value


def dumps(data: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """Strict JSON (``allow_nan=False`` holds: no bare Infinity / NaN)."""
    return json.dumps(to_strict(data), indent=indent, sort_keys=sort_keys, allow_nan=False)


def loads(text: str) -> Any:
    """JSON written by ``dumps`` or by plain ``json.dumps`` (bare Infinity / NaN), non-finite values as floats."""
    return from_strict(json.loads(text))


def path_roles(root: Path) -> list[tuple[Path, str]]:
    """(folder, how a record names it), most specific first: the project root, then the data, cache,
    torch hub and temporary folders and the home folder."""
    import torch

    roles = [(root, "")]
    if os.environ.get("REPRO_DATA_DIR"):
        roles.append((Path(os.environ["REPRO_DATA_DIR"]), "$REPRO_DATA_DIR"))
    roles.append((cache_root(), "$REPRO_CACHE_DIR"))
    roles += [(Path(torch.hub.get_dir()), "$TORCH_HOME/hub"), (Path(tempfile.gettempdir()), "$TMPDIR"),
              (Path.home(), "~")]
    resolved = [(Path(os.path.abspath(p)), name) for p, name in roles]
    return sorted(resolved, key=lambda item: len(item[0].parts), reverse=True)


def portable_path(text: str, roles: list[tuple[Path, str]]) -> str:
    """An absolute path as its role (see ``path_roles``)."""
    path = Path(os.path.abspath(text))
    for folder, name in roles:
        if path == folder or folder in path.parents:
            rest = path.relative_to(folder).as_posix()
            if not name:
                return rest if rest != "." else "."
            return name if rest == "." else f"{name}/{rest}"
    return str(PurePosixPath("<external>", *path.parts[-2:]))


# an absolute path: at the start of a string or after a space, quote or "=", up to the next space or quote
_ABSOLUTE = re.compile(r"""(?:^|(?<=[\s'"=]))/[^\s'"]+""")


def portable_text(text: str, roles: list[tuple[Path, str]]) -> str:
    """``text`` (a path, a command line, a YAML file) with every absolute path in it rewritten by ``portable_path``."""
    return _ABSOLUTE.sub(lambda m: portable_path(m.group(0), roles), text)


def portable(value: Any, roles: list[tuple[Path, str]]) -> Any:
    """``value`` (a record: dicts, lists, strings, numbers) with every absolute path in its strings rewritten."""
    if isinstance(value, str):
        return portable_text(value, roles)
    if isinstance(value, dict):
        return {k: portable(v, roles) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, roles) for v in value]
    return value

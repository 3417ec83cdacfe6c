"""Rewrite the committed records under results/ so a reader can use them anywhere (issue 17, part 5).

- Every absolute path in ``metrics.json``, ``results.json`` and the YAML records (``config.yaml``,
  ``hparams.yaml``) is replaced by its role (``repro.portable``): relative to the checkout the run
  was made in (each record's root is recovered from its absolute ``save_dir`` and its relative
  ``run_dir``), or ``$REPRO_DATA_DIR/...``, ``$TMPDIR/...``, ``~/...``, ``<external>/...``.
- JSON is rewritten as strict JSON: a bare ``Infinity`` / ``NaN`` becomes the string ``"Infinity"`` /
  ``"NaN"`` (``repro.portable.loads`` reads both back as floats). Key order and indentation are kept.
- IS protocols written before IS's std followed the reference protocol (ddof 0) get
  ``is_std_ddof: 1``: their std is torchmetrics' sample std, and the record now says so.

YAML files are rewritten as text (only the paths change) and checked to parse to the same data with
the paths replaced. Run from the repository root (it prints what it changed):

    REPRO_DATA_DIR=/work/shared/data python tools/portable_records.py [results]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repro.portable import dumps, loads, path_roles, portable, portable_text  # noqa: E402

YAML_RECORDS = ("config.yaml", "hparams.yaml")


def checkout_roots(folder: Path) -> set[Path]:
    """The checkouts the runs under ``folder`` were made in: a record's absolute logger ``save_dir``
    minus its relative ``run_dir``."""
    roots = set()
    for path in folder.rglob("metrics.json"):
        record = loads(path.read_text())
        run_dir = record.get("run_dir") if isinstance(record, dict) else None
        try:
            save_dir = record["config"]["trainer"]["logger"]["init_args"]["save_dir"]
        except (KeyError, TypeError):
            continue
        if run_dir and save_dir.startswith("/") and save_dir.endswith("/" + run_dir):
            roots.add(Path(save_dir[: -len(run_dir) - 1]))
    return roots


def mark_is_convention(record: Any) -> Any:
    """Protocol records of IS values without ``is_std_ddof`` get ``is_std_ddof: 1`` (torchmetrics' std)."""
    protocols = record.get("protocols") if isinstance(record, dict) else None
    for name, protocol in (protocols or {}).items():
        if isinstance(protocol, dict) and "is_splits" in protocol and "is_std_ddof" not in protocol:
            was_sorted = list(protocol) == sorted(protocol)
            protocol["is_std_ddof"] = 1
            protocols[name] = dict(sorted(protocol.items())) if was_sorted else protocol
    return record


def _indent(text: str) -> int | None:
    """The indentation of a JSON text (None: all on one line)."""
    lines = text.splitlines()
    return len(lines[1]) - len(lines[1].lstrip()) if len(lines) > 1 else None


def rewrite_json(path: Path, roles: list) -> bool:
    text = path.read_text()
    data = mark_is_convention(portable(loads(text), roles))
    new = dumps(data, indent=_indent(text), sort_keys=False) + ("\n" if text.endswith("\n") else "")
    json.loads(new, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))  # strict
    if new == text:
        return False
    path.write_text(new)
    return True


def rewrite_yaml(path: Path, roles: list) -> bool:
    text = path.read_text()
    new = portable_text(text, roles)
    if new == text:
        return False
    if yaml.safe_load(new) != portable(yaml.safe_load(text), roles):
        raise SystemExit(f"{path}: rewriting the paths as text changed more than the paths; not written")
    path.write_text(new)
    return True


def main(folder: Path) -> None:
    roots = checkout_roots(folder)
    roles = sorted([(root, "") for root in roots] + path_roles(ROOT), key=lambda r: len(r[0].parts), reverse=True)
    print("checkout roots:", ", ".join(map(str, sorted(roots))) or "none")
    changed = 0
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".json":
            changed += rewrite_json(path, roles)
        elif path.name in YAML_RECORDS:
            changed += rewrite_yaml(path, roles)
    print(f"rewrote {changed} files under {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results")

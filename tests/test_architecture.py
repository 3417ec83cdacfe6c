"""The package's shape: import layers and no cycles (import-linter, contracts in pyproject.toml), and a
command line that starts without loading torch or Lightning."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from repro import REPO_ROOT

LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    done = lint(REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_upward_import_or_a_cycle_breaks_the_contracts(tmp_path):
    """The same contracts on a copy of the package where the run record imports the command line."""
    shutil.copytree(REPO_ROOT / "repro", tmp_path / "repro", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    record = tmp_path / "repro" / "record.py"
    record.write_text(record.read_text() + "\nfrom repro import cli  # noqa: E402\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "repro layers BROKEN" in done.stdout and "repro.record -> repro.cli" in done.stdout
    assert "no import cycles between sibling modules or packages BROKEN" in done.stdout


def _timed(code: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    return time.perf_counter() - t0, done


def test_help_and_tables_start_without_torch_or_lightning():
    """`repro --help`, `repro reproduce --help` and `repro tables` import neither torch nor Lightning (those take
    seconds), so they answer at once; 3 s leaves a loaded CI machine room (about 0.3 s and 0.9 s here)."""
    check = "import sys, contextlib; from repro.cli import main\nwith contextlib.suppress(SystemExit): main({args})\n" \
            "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]; assert not heavy, heavy"
    seconds, done = _timed(check.format(args="['--help']"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: repro COMMAND" in done.stdout and seconds < 3.0
    seconds, done = _timed(check.format(args="['reproduce', '--help']"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--report-only" in done.stdout
    seconds, done = _timed(check.format(args="['tables']"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "toy:" in done.stdout

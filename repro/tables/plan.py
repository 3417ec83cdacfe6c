"""A table's plan: its runs (one per row and seed), where each keeps its files, the ``repro fit`` arguments
that train it, and whether it is done. Reads run records only; imports neither torch nor Lightning."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.record import DONE, checkpoint_in, read_record, status_of
from repro.tables.spec import Row, SpecError, TableSpec

__all__ = ["Run", "Records", "plan", "is_done", "read_records", "record_value", "override_args", "relative"]


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it is inside it, else as given."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def record_value(record: dict[str, Any], key: str) -> Any:
    """A column's value in a run record: ``metrics[key]``, else the record's own field ``key`` (e.g. train_seconds)."""
    metrics = record.get("metrics") or {}
    return metrics[key] if key in metrics else record.get(key)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """Dotted-key overrides as CLI arguments (lists and mappings as JSON, which jsonargparse reads)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif value is None:
            text = "null"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        args += [f"--{key}", text]
    return args


@dataclass(frozen=True)
class Run:
    """One training run of a table: a row trained with one seed."""

    spec: TableSpec
    row: Row
    seed: int

    @property
    def name(self) -> str:
        return f"{self.row.id}/seed{self.seed}"

    @property
    def results_dir(self) -> Path:
        return self.spec.results_dir / self.row.id / f"seed{self.seed}"

    @property
    def work_dir(self) -> Path:
        return self.spec.runs_dir / self.row.id / f"seed{self.seed}"

    @property
    def in_progress_dir(self) -> Path:
        """Where the run keeps its resumable checkpoint until it finishes (inside ``results_dir``)."""
        return self.results_dir / "in_progress"

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint an unfinished run continues from, if it left one."""
        return checkpoint_in(self.in_progress_dir)

    def fit_args(self) -> list[str]:
        """Arguments of ``repro fit``: the row's config, table and row overrides, seed, logger in ``work_dir``."""
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": str(self.work_dir), "name": "", "version": ""}}
        args = ["--config", str(self.row.config)]
        args += override_args({**self.spec.overrides, **self.row.overrides})
        args += ["--seed_everything", str(self.seed), "--trainer.logger", json.dumps(logger),
                 "--trainer.enable_progress_bar", "false",
                 "--resumable.dirpath", relative(self.in_progress_dir, self.spec.root)]
        if self.row.devices != 1:
            args += ["--trainer.devices", str(self.row.devices)]
        return args

    def command(self, subcommand: str = "fit", ckpt: Path | None = None) -> list[str]:
        resume = ["--ckpt_path", relative(ckpt, self.spec.root)] if ckpt else []
        return [sys.executable, "-m", "repro", subcommand, *self.fit_args(), *resume]

    def wandb_args(self) -> list[str]:
        """``repro fit`` arguments that log this run to W&B: the table as the group, named ``<row>/seed<k>``."""
        return ["--wandb.enabled", "true", "--wandb.table", self.spec.name, "--wandb.variant", self.row.id]


def is_done(run: Run) -> bool:
    """Whether the run's record says finished (at the length it was asked for) or diverged; a failed, stopped
    or missing run is run again."""
    return status_of(read_record(run.results_dir)) in DONE


def plan(spec: TableSpec, seeds: list[int] | None = None, only: list[str] | None = None) -> list[Run]:
    """The table's runs (rows in ``only``, if given, and ``seeds``, default each row's: ``TableSpec.seeds_of``),
    row-major."""
    for what, given in (("--seeds", seeds or []), ("--only", only or [])):
        repeated = sorted({str(x) for x in given if list(given).count(x) > 1})
        if repeated:
            raise SpecError(f"{what}: {', '.join(repeated)} given twice; each run trains once, in its own folder")
    rows = [spec.row(r) for r in only] if only else spec.rows
    return [Run(spec, row, seed) for row in rows for seed in (seeds or spec.seeds_of(row))]


Records = list[tuple[Run, "dict[str, Any] | None"]]  # planned runs with their records (None: not run, or unreadable)


def read_records(spec: TableSpec) -> Records:
    """Every planned run with its record, read once (a page is written from one such read)."""
    return [(run, read_record(run.results_dir)) for run in plan(spec)]

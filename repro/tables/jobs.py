"""A table's jobs: what one training process runs, a single (row, seed) run or a seed ensemble of several
seeds of one row (``repro fit --ensemble.seeds``, ``repro.ensemble``).

By default ``repro reproduce`` groups the unfinished seeds of a row into ensembles of at most the spec's
``ensemble_size`` (or ``--ensemble-size``; default: all of them, one process per row), split into jobs of near-equal
size; ``--no-ensemble`` runs one process per seed. A row runs as single runs instead when its model cannot be
stacked (decided from its resolved config by building one model, before anything trains: ``stacking_refusal``),
when it is a multi-device row, or for a seed that continues a single run's own checkpoint; a one-seed job is a
single run. Layout of an ensemble job of seeds 0, 3, 5 of row ``r``:

- each member writes ``runs/tables/<table>/r/seed<k>/`` and its record ``results/<table>/r/seed<k>/metrics.json``,
  exactly where and as a single run does (plus an ``ensemble`` entry naming its mates and the job's command);
- the job's own resumable checkpoint: ``results/<table>/r/ensemble_0_3_5/in_progress/last.ckpt`` (its folder
  named by its seeds), its logs and config: ``runs/tables/<table>/r/ensemble_0_3_5/``.

An ensemble checkpoint is resumed only by the job of exactly its seeds: the grouping keeps such a job together
when all its seeds are still to run (a resumed job may exceed the cap). Otherwise its seeds are grouped afresh, and the job
folders of a row that share a seed with a job starting fresh are removed then (their state is superseded). The
checkpoint checks its seeds on load too (``EnsembleMixin.on_load_checkpoint``). Imports neither torch nor Lightning
(except ``stacking_refusal``, which builds a model).
"""
from __future__ import annotations

import contextlib
import io
import json
import shlex
import warnings
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from repro.record import checkpoint_in, read_record
from repro.tables.plan import Run, is_done, relative
from repro.tables.spec import Row, TableSpec

__all__ = ["Job", "ENSEMBLE_PREFIX", "job_folders", "started_unfinished", "group_jobs", "stacking_refusal",
           "replace_arg"]

ENSEMBLE_PREFIX = "ensemble_"


def replace_arg(args: list[str], key: str, value: str) -> list[str]:
    """``args`` with the value after ``key`` replaced (``key`` must be there)."""
    out = list(args)
    out[out.index(key) + 1] = value
    return out


@dataclass(frozen=True)
class Job:
    """What one process trains: one run (``runs`` of length 1) or a seed ensemble of runs of one row."""

    runs: tuple[Run, ...]

    @property
    def ensemble(self) -> bool:
        return len(self.runs) > 1

    @property
    def spec(self) -> TableSpec:
        return self.runs[0].spec

    @property
    def row(self) -> Row:
        return self.runs[0].row

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def name(self) -> str:
        if not self.ensemble:
            return self.runs[0].name
        return f"{self.row.id}/seeds {','.join(map(str, self.seeds))}"

    @property
    def folder(self) -> str:
        """The job's folder name under its row: ``ensemble_<seed>_<seed>...``."""
        return ENSEMBLE_PREFIX + "_".join(map(str, self.seeds))

    @property
    def work_dir(self) -> Path:
        """Where the process logs (``stdout.log``, ``stderr.log``) and keeps checkpoints; a single run's own."""
        return self.spec.runs_dir / self.row.id / self.folder if self.ensemble else self.runs[0].work_dir

    @property
    def results_dir(self) -> Path | None:
        """An ensemble job's folder under ``results/`` (its ``in_progress``); None for a single run."""
        return self.spec.results_dir / self.row.id / self.folder if self.ensemble else None

    @property
    def in_progress_dir(self) -> Path:
        """Where the job keeps its resumable checkpoint until it finishes."""
        return self.results_dir / "in_progress" if self.results_dir else self.runs[0].in_progress_dir

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint an unfinished job continues from, if it left one."""
        return checkpoint_in(self.in_progress_dir)

    def fit_args(self) -> list[str]:
        """``repro fit`` arguments: the single run's, or for an ensemble the first member's with the job's logger
        folder and checkpoint folder, and every member's seed and run folder."""
        first = self.runs[0]
        if not self.ensemble:
            return first.fit_args()
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": str(self.work_dir), "name": "", "version": ""}}
        args = replace_arg(first.fit_args(), "--trainer.logger", json.dumps(logger))
        args = replace_arg(args, "--resumable.dirpath", relative(self.in_progress_dir, self.spec.root))
        return args + ["--ensemble.seeds", json.dumps(self.seeds),
                       "--ensemble.run_dirs", json.dumps([str(r.work_dir) for r in self.runs])]

    def command(self, subcommand: str = "fit", ckpt: Path | None = None) -> list[str]:
        resume = ["--ckpt_path", relative(ckpt, self.spec.root)] if ckpt else []
        return [sys.executable, "-m", "repro", subcommand, *self.fit_args(), *resume]

    def recorded_command(self) -> str:
        """The job's ``repro fit`` command as records show it (paths under the table's root made relative)."""
        return "repro fit " + shlex.join(self.fit_args()).replace(str(self.spec.root) + "/", "")

    def wandb_args(self) -> list[str]:
        """W&B arguments: every member is its own W&B run, ``<row>/seed<k>`` (``Run.wandb_args``)."""
        return self.runs[0].wandb_args()


def job_folders(spec: TableSpec, row: Row) -> dict[tuple[int, ...], Path]:
    """The ensemble job folders under ``results/<table>/<row>/`` by their seeds (malformed names ignored)."""
    out: dict[tuple[int, ...], Path] = {}
    base = spec.results_dir / row.id
    for path in sorted(base.glob(ENSEMBLE_PREFIX + "*")) if base.is_dir() else []:
        try:
            out[tuple(int(s) for s in path.name.removeprefix(ENSEMBLE_PREFIX).split("_"))] = path
        except ValueError:
            continue
    return out


def started_unfinished(runs: list[Run]) -> list[str]:
    """The names of ``runs`` begun but not done: a record that is not finished / diverged, or an in-progress
    checkpoint of their own or of an ensemble job holding their seed."""
    out = []
    for run in runs:
        if is_done(run):
            continue
        jobs = [f / "in_progress" for seeds, f in job_folders(run.spec, run.row).items() if run.seed in seeds]
        if read_record(run.results_dir) is not None or any(checkpoint_in(f) for f in [run.in_progress_dir, *jobs]):
            out.append(run.name)
    return out


def _split(runs: list[Run], cap: int) -> list[tuple[Run, ...]]:
    """``runs`` in order, cut into ceil(n / cap) consecutive parts of near-equal size."""
    parts = -(-len(runs) // cap)
    base, extra = divmod(len(runs), parts)
    out, i = [], 0
    for p in range(parts):
        size = base + (p < extra)
        out.append(tuple(runs[i:i + size]))
        i += size
    return out


def group_jobs(todo: list[Run], cap: int | None, refusals: dict[str, str | None]) -> tuple[list[Job], dict[str, str]]:
    """The jobs that run ``todo`` (row-major, as planned), and per row how it runs and why.

    ``cap``: most members per ensemble (None: all unfinished seeds of a row; 1: no ensembles). ``refusals``:
    per row id, why its model cannot be stacked (None: it can)."""
    jobs: list[Job] = []
    how: dict[str, str] = {}
    for row_id in dict.fromkeys(r.row.id for r in todo):
        mine = [r for r in todo if r.row.id == row_id]
        row, spec = mine[0].row, mine[0].spec
        single = ("--no-ensemble" if cap == 1 else "the row sets ensemble: false" if not row.ensemble
                  else f"devices: {row.devices} (DDP)" if row.devices != 1 else refusals.get(row_id))
        if single or len(mine) == 1:
            jobs += [Job((r,)) for r in mine]
            how[row_id] = f"{len(mine)} single run(s)" + (f": {single}" if single else "")
            continue
        alone = [r for r in mine if r.resume_checkpoint() is not None]  # continues its own single-run checkpoint
        free = {r.seed: r for r in mine if r not in alone}
        groups: list[tuple[Run, ...]] = []
        resumed = []
        for seeds, folder in job_folders(spec, row).items():
            if checkpoint_in(folder / "in_progress") is not None and set(seeds) <= set(free):
                groups.append(tuple(free.pop(s) for s in seeds))
                resumed.append(folder.name)
        left = list(free.values())
        groups += _split(left, cap or len(left)) if left else []
        groups.sort(key=lambda g: g[0].seed)
        jobs += [Job(g) for g in groups] + [Job((r,)) for r in alone]
        sizes = [str(len(g)) for g in groups if len(g) > 1]
        singles = sum(len(g) == 1 for g in groups) + len(alone)
        parts = [f"{len(sizes)} ensemble(s) of {'/'.join(sizes)} seeds"] if sizes else []
        parts += [f"{singles} single run(s)" + (f" ({len(alone)} continuing their own checkpoint)" if alone else "")
                  ] if singles else []
        parts += [f"resumes {name}" for name in resumed]
        how[row_id] = ", ".join(parts)
    return jobs, how


@lru_cache(maxsize=None)
def _refusal(model_json: str) -> str | None:
    import copy

    import torch
    from jsonargparse import ArgumentParser

    from repro.ensemble import EnsembleError, make_ensemble
    from repro.variants import GANModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(GANModule, "model")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # Lightning's notes on saved hyper-parameters: the runs show them
            model = parser.instantiate_classes(parser.parse_object({"model": json.loads(model_json)})).model
            make_ensemble(copy.deepcopy(model), [model], [0], [torch.get_rng_state()])  # every check, one member
    except EnsembleError as err:  # the reason, without the list of what is supported and the advice
        return str(err).removeprefix("ensemble: ").split("; ")[0]
    except Exception as err:  # noqa: BLE001 - the model does not build here; its runs will say why, alone
        return f"its model could not be built to check ({type(err).__name__}: {str(err)[:200]})"
    return None


def stacking_refusal(config: dict[str, Any]) -> str | None:
    """Why the model of a row's resolved ``config`` cannot train as a seed ensemble (``repro.ensemble``'s own
    refusal message), or None; decided by building the model once, without data or training."""
    return _refusal(json.dumps(config["model"], sort_keys=True))

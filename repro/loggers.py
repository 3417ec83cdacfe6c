"""Loggers of a ``repro fit`` run: a CSV logger always (results never depend on W&B), plus Weights &
Biases when ``wandb.enabled`` is set in the config.

W&B runs offline unless an API key is set (``WANDB_API_KEY``; an explicit ``WANDB_MODE`` wins). A run
is named ``<variant>/seed<k>`` and grouped by table (``repro reproduce TABLE --wandb`` passes the table
and the row id, so every run of a table is in one group, one job type per row), tagged with table,
variant, data set and ``seed<k>``. The full resolved config is logged once as the run's config, with a
``run`` entry holding the resolved data root, the git commit and the seed (Lightning's own second,
top-level copy of the model's hyper-parameters is not sent). ``repro.callbacks.intervals`` makes any run,
short or long, log losses, sample grids, spectra and conditioning at intervals proportional to ``max_steps``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from repro import REPO_ROOT
from repro.record import source_state

__all__ = ["WandbOptions", "RunLogger", "GeneratorStepStamp", "with_loggers", "wandb_mode"]


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set, else "online" with an API key and "offline" without."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class RunLogger(WandbLogger):
    """A ``WandbLogger`` that takes the run's config once (``log_config``) and ignores Lightning's automatic
    ``log_hyperparams`` (a second, flattened copy of the model's arguments at the top level). Each one opens
    its own W&B run (``reinit="create_new"``, which leaves ``wandb.run`` unset, so Lightning does not hand a
    later logger the first one's run): a seed ensemble's members are one W&B run each."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:  # wandb warns about the setting even when unset
            self._wandb_init.pop("anonymous")
        self._wandb_init["reinit"] = "create_new"
        self._finished = False

    def finalize(self, status: str) -> None:
        """Lightning's finalize, then finish this logger's W&B run (``wandb.finish()`` only finishes the
        process's current run, which a ``create_new`` run is not), failed unless ``status`` is "success"."""
        super().finalize(status)
        if self._experiment is not None and not self._finished:
            self._finished = True
            self._experiment.finish(exit_code=0 if status == "success" else 1)

    def log_hyperparams(self, params: Any) -> None:
        """Ignored: the full config was logged by ``log_config``."""

    def log_config(self, config: dict[str, Any]) -> None:
        super().log_hyperparams(config)


class GeneratorStepStamp(L.Callback):
    """Stamps the values logged in a training step with the generator updates done after it (Lightning
    would use its batch counter, one behind the step at which the callbacks log), so every logger's
    ``step`` (W&B's ``trainer/global_step``) only grows."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        module.log("step", float(trainer.global_step), prog_bar=False)


class WandbOptions:
    """W&B settings of a run (config group ``wandb``).

    Args:
        enabled: add a W&B logger next to the CSV logger.
        project: W&B project.
        table: the paper table the run belongs to (``repro reproduce --wandb`` sets it); the W&B group.
            "adhoc" if not given.
        variant: the row / variant name (W&B job type and name prefix); default the model class in lower case.
        tags: extra tags.
    """

    def __init__(
        self,
        enabled: bool = False,
        project: str = "repro",
        table: str | None = None,
        variant: str | None = None,
        tags: list[str] | None = None,
    ):
        self.enabled, self.project, self.table, self.variant = enabled, project, table, variant
        self.tags = list(tags or [])

    def logger(self, save_dir: Path, model: Any, datamodule: Any, config: dict[str, Any]) -> RunLogger:
        """The W&B logger of a run writing under ``save_dir``, with ``config`` and the run's facts logged."""
        table = self.table or "adhoc"
        variant = self.variant or type(model).__name__.lower()
        seed = config.get("seed_everything")
        logger = RunLogger(
            project=self.project,
            save_dir=str(save_dir),
            name=f"{variant}/seed{seed}",
            group=table,
            job_type=variant,
            tags=[table, variant, datamodule.dataset, f"seed{seed}", *self.tags],
            mode=wandb_mode(),
        )
        facts = {"data_root": str(Path(datamodule.data_root).resolve()), "seed": seed,
                 **source_state(REPO_ROOT)}
        logger.log_config({**config, "run": facts})
        return logger


def with_loggers(loggers: list[Logger], wandb: WandbOptions | None, model: Any, datamodule: Any,
                 config: dict[str, Any]) -> list[Logger]:
    """``loggers`` with a CSV logger first (added under ``runs/`` if the config has none) and, if enabled,
    a W&B logger writing its ``wandb/`` folder into the CSV logger's run folder (created by the CSV logger
    first, so it does not warn about an existing, non-empty folder; as an absolute path, since W&B's service
    process, started once per process, resolves relative paths against its own working directory)."""
    out = list(loggers)
    if not any(isinstance(lg, CSVLogger) for lg in out):
        out.insert(0, CSVLogger("runs"))
    if wandb is not None and wandb.enabled:
        csv = next(lg for lg in out if isinstance(lg, CSVLogger))
        csv.experiment  # noqa: B018 -- creates the CSV run folder before W&B writes into it
        out.append(wandb.logger(Path(csv.log_dir).resolve(), model, datamodule, config))
    return out

"""Loggers of a ``repro fit`` run: a CSV logger always (results never depend on W&B), plus Weights &
Biases when ``wandb.enabled`` is set in the config.

W&B runs offline unless an API key is set (``WANDB_API_KEY``; an explicit ``WANDB_MODE`` wins), and
are grouped as ``<table>/<variant>`` (all seeds of one table row in one group) with job type
``<variant>`` and tags (table, variant, data set). The full resolved config is logged as the run's
hyper-parameters; sample grids (``SamplePlots``), spectra histograms (``SpectraPlots``) and the
conditioning trace (``ConditioningTrace``) reach it through the callbacks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

__all__ = ["WandbOptions", "with_loggers", "wandb_mode"]


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set, else "online" with an API key and "offline" without."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbOptions:
    """W&B settings of a run (config group ``wandb``).

    Args:
        enabled: add a WandbLogger next to the CSV logger.
        project: W&B project.
        table: the paper table the run belongs to (``repro reproduce`` sets it); "adhoc" if not given.
        variant: the row / variant name; default the model class name in lower case.
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

    def logger(self, save_dir: Path, model: Any, dataset: str, config: dict[str, Any]) -> Logger:
        from lightning.pytorch.loggers import WandbLogger

        table = self.table or "adhoc"
        variant = self.variant or type(model).__name__.lower()
        logger = WandbLogger(
            project=self.project,
            save_dir=str(save_dir),
            group=f"{table}/{variant}",
            job_type=variant,
            tags=[table, variant, dataset, *self.tags],
            mode=wandb_mode(),
        )
        logger.log_hyperparams(config)
        return logger


def with_loggers(loggers: list[Logger], wandb: WandbOptions | None, model: Any, dataset: str,
                 config: dict[str, Any]) -> list[Logger]:
    """``loggers`` with a CSV logger first (added under ``runs/`` if the config has none) and, if enabled,
    a W&B logger writing its ``wandb/`` folder into the CSV logger's run folder."""
    out = list(loggers)
    if not any(isinstance(lg, CSVLogger) for lg in out):
        out.insert(0, CSVLogger("runs"))
    if wandb is not None and wandb.enabled:
        csv = next(lg for lg in out if isinstance(lg, CSVLogger))
        out.append(wandb.logger(Path(csv.log_dir), model, dataset, config))
    return out

"""Loggers of a ``repro fit`` run: a CSV logger always (results never depend on W&B), plus Weights &
Biases when ``wandb.enabled`` is set in the config.

W&B runs offline unless an API key is set (``WANDB_API_KEY``; an explicit ``WANDB_MODE`` wins). A run
is named ``<variant>/seed<k>`` and grouped by table (``repro reproduce TABLE --wandb`` passes the table
and the row id, so every run of a table is in one group, one job type per row), tagged with table,
variant, data set and ``seed<k>``. The full resolved config is logged once as the run's config, with a
``run`` entry holding the resolved data root, the git commit and the seed (Lightning's own second,
top-level copy of the model's hyper-parameters is not sent). ``scale_intervals`` makes any run, short or
long, log losses, sample grids, spectra and conditioning at intervals proportional to ``max_steps``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

__all__ = ["WandbOptions", "RunLogger", "GeneratorStepStamp", "with_loggers", "wandb_mode", "scale_intervals",
           "POINTS_PER_RUN"]

# how many times over a run each series is logged at most (intervals = max_steps // points)
POINTS_PER_RUN = {"losses": 100, "samples": 10, "spectra": 5, "conditioning": 10}


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set, else "online" with an API key and "offline" without."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class RunLogger(WandbLogger):
    """A ``WandbLogger`` that takes the run's config once (``log_config``) and ignores Lightning's automatic
    ``log_hyperparams`` (a second, flattened copy of the model's arguments at the top level)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:  # wandb warns about the setting even when unset
            self._wandb_init.pop("anonymous")

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
        from repro.tables.runner import source_state

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
                 **source_state(Path(__file__).resolve().parents[1])}
        logger.log_config({**config, "run": facts})
        return logger


def with_loggers(loggers: list[Logger], wandb: WandbOptions | None, model: Any, datamodule: Any,
                 config: dict[str, Any]) -> list[Logger]:
    """``loggers`` with a CSV logger first (added under ``runs/`` if the config has none) and, if enabled,
    a W&B logger writing its ``wandb/`` folder into the CSV logger's run folder (created by the CSV logger
    first, so it does not warn about an existing, non-empty folder)."""
    out = list(loggers)
    if not any(isinstance(lg, CSVLogger) for lg in out):
        out.insert(0, CSVLogger("runs"))
    if wandb is not None and wandb.enabled:
        csv = next(lg for lg in out if isinstance(lg, CSVLogger))
        csv.experiment  # noqa: B018 -- creates the CSV run folder before W&B writes into it
        out.append(wandb.logger(Path(csv.log_dir), model, datamodule, config))
    return out


def _interval(configured: int | None, max_steps: int, points: int) -> int:
    """``configured`` made at most ``max_steps // points``, so a run logs ~``points`` times; None (off)
    becomes that interval, 0 (an explicit "only at the end") stays."""
    scaled = max(1, max_steps // points)
    return scaled if configured is None else min(configured, scaled) if configured > 0 else configured


def scale_intervals(trainer: L.Trainer, wandb_enabled: bool) -> None:
    """Loss logging every ``max_steps / 100`` generator updates at most (any run); with W&B also sample grids,
    spectra and the conditioning trace at intervals proportional to ``max_steps`` (turned on if off; an
    interval of 0, "only at the end", is kept)."""
    from repro.callbacks import ConditioningTrace, SamplePlots, SpectraPlots

    if not trainer.max_steps or trainer.max_steps < 1:
        return
    trainer.log_every_n_steps = _interval(trainer.log_every_n_steps, trainer.max_steps, POINTS_PER_RUN["losses"])
    if not wandb_enabled:
        return
    for cb in trainer.callbacks:
        for kind, key in ((SamplePlots, "samples"), (SpectraPlots, "spectra"), (ConditioningTrace, "conditioning")):
            if isinstance(cb, kind):
                cb.every_n_steps = _interval(cb.every_n_steps, trainer.max_steps, POINTS_PER_RUN[key])

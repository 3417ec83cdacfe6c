"""What a ``repro fit`` run shows while it trains and when it ends.

- ``GeneratorProgress``: one bar in generator updates toward ``trainer.max_steps`` (the papers' unit;
  Lightning's own bar counts batches within an "epoch" of an infinite loader) with the latest losses.
- ``RunSummary``: after fit, the run folder, the final metrics, the figures and the checkpoint.
- ``install_run_display``: puts both on a trainer (replacing Lightning's default bar, keeping a custom one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar, TQDMProgressBar

from repro.callbacks.evaluation import FinalEvaluation
from repro.callbacks.rundir import run_dir

__all__ = ["GeneratorProgress", "RunSummary", "install_run_display", "loss_text"]


def loss_text(metrics: dict[str, Any]) -> str:
    """``{"train/d_loss": 1.3761, ...}`` -> ``"d_loss 1.376  g_loss 0.6921"`` (progress-bar values, short names)."""
    return "  ".join(f"{k.rsplit('/', 1)[-1]} {float(v):.4g}" for k, v in metrics.items())


class GeneratorProgress(ProgressBar):
    """A rich progress bar of generator updates (``trainer.global_step``) out of ``max_steps``, with the
    values the module logs to the progress bar (the losses); rank 0 only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._progress: Any = None
        self._task: Any = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._trainer is not None and self.trainer.is_global_zero

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.is_enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("generator updates"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[losses]}"))
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._task = self._progress.add_task("fit", total=total, completed=trainer.global_step, losses="")
        self._progress.start()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step,
                                  losses=loss_text(trainer.progress_bar_metrics))

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._progress is not None:  # the final state stays on screen
            self._progress.update(self._task, completed=trainer.global_step)
        self._stop()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._stop()


class RunSummary(L.Callback):
    """After fit (rank 0): where the run's files are, its final metrics, figures and last checkpoint."""

    def __init__(self) -> None:
        self.text = ""

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer)
        lines = [f"run folder: {folder}",
                 f"generator updates: {trainer.global_step}" + (f" of {trainer.max_steps}" if trainer.max_steps > 0 else "")]
        record = next((cb.record for cb in trainer.callbacks if isinstance(cb, FinalEvaluation)), {})
        metrics = record.get("metrics") or {}
        if metrics:
            lines.append(f"final metrics ({folder / 'metrics.json'}):")
            lines += [f"  {k:<32} {v:.4g}" if isinstance(v, float) else f"  {k:<32} {v}" for k, v in metrics.items()]
        figures = [cb.last_path for cb in trainer.callbacks if getattr(cb, "last_path", None)]
        if figures:
            lines.append("figures: " + ", ".join(str(p) for p in figures))
        checkpoints = [cb.last_model_path or cb.best_model_path for cb in trainer.callbacks
                       if isinstance(cb, ModelCheckpoint) and (cb.last_model_path or cb.best_model_path)]
        if checkpoints:
            lines.append(f"checkpoint: {checkpoints[0]}")
        for logger in trainer.loggers:
            run = getattr(logger, "_experiment", None)
            if run is not None and getattr(run, "dir", None):
                where = Path(run.dir).parent
                offline = getattr(getattr(run, "settings", None), "mode", "") == "offline"
                lines.append(f"W&B run: {where}" + (f" (offline; upload with `wandb sync {where}`)" if offline else ""))
        self.text = "\n".join(lines)
        print(self.text, flush=True)


def install_run_display(trainer: L.Trainer) -> None:
    """Replace Lightning's default progress bar (if shown) by ``GeneratorProgress`` and add ``RunSummary``."""
    trainer.callbacks = [GeneratorProgress() if type(cb) in (RichProgressBar, TQDMProgressBar) else cb
                         for cb in trainer.callbacks]
    trainer.callbacks.append(RunSummary())

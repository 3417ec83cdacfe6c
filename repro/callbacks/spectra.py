"""Singular-value spectra of every discriminator layer, at an interval, as PNG figures and logged histograms.

The figure copies the SN-GAN paper's Fig. 3 (Miyato et al. 2018): one panel per layer, the squared
singular values scaled so the largest is 1. Histograms go to any logger that takes them (W&B,
TensorBoard); every logger gets the per-layer largest singular value as a scalar series.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from repro.callbacks.rundir import last_step, run_dir
from repro.metrics.spectra import layer_spectra, normalized_spectrum
from repro.plotting import save_figure

__all__ = ["SpectraPlots", "save_spectra_figure", "log_histograms", "log_png"]


def log_histograms(trainer: L.Trainer, values: dict[str, Tensor], step: int) -> None:
    """Log each tensor as a histogram to the loggers that support histograms (W&B, TensorBoard)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log(
                {**{k: wandb.Histogram(v.numpy()) for k, v in values.items()}, "trainer/global_step": step}
            )
        elif isinstance(logger, TensorBoardLogger):
            for k, v in values.items():
                logger.experiment.add_histogram(k, v, step)


def log_png(trainer: L.Trainer, key: str, path: Path, step: int) -> None:
    """Send a saved figure to the loggers that take images (W&B's ``log_image``)."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], step=step)


def save_spectra_figure(spectra: dict[str, Tensor], path: Path, title: str, squared: bool = True) -> Path:
    """One histogram panel per layer of the normalized spectra (Miyato et al. 2018, Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(spectra)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), dpi=100, squeeze=False)
    for i, (ax, (name, s)) in enumerate(zip(axes[0], spectra.items())):
        ax.hist(s.numpy(), bins=20, range=(0.0, 1.0), color="tab:blue")
        ax.set_title(f"layer {i + 1}\n{name}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("count", fontsize=7)
    fig.suptitle(f"{title}: {'squared ' if squared else ''}singular values / largest", fontsize=8)
    return save_figure(fig, path)


class SpectraPlots(L.Callback):
    """Every ``every_n_steps`` generator updates (0: only at the end; None: off) and at the end of
    training: exact spectra of D's layers, saved as ``<log_dir>/spectra/<step>.png`` and ``.pt`` (raw
    singular values); the last step once, as ``final``."""

    def __init__(self, every_n_steps: int | None = None, squared: bool = True):
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"spectra.every_n_steps must be >= 0 or null (off), got {every_n_steps}")
        self.every_n_steps, self.squared = every_n_steps, squared
        self.last_path: Path | None = None

    def _write(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> None:
        if trainer.global_rank != 0:
            return
        step = trainer.global_step
        spectra = layer_spectra(module.discriminator)
        normalized = {k: normalized_spectrum(v, self.squared) for k, v in spectra.items()}
        out = run_dir(trainer) / "spectra"
        self.last_path = save_spectra_figure(normalized, out / f"{name}.png", f"step {step}", self.squared)
        torch.save(spectra, out / f"{name}.pt")
        for logger in trainer.loggers:
            logger.log_metrics({f"spectra/{k}/sigma_max": float(v[0]) for k, v in spectra.items()}, step=step)
        log_histograms(trainer, {f"spectra/{k}": v for k, v in normalized.items()}, step)
        log_png(trainer, "spectra_figure", self.last_path, step)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_step(trainer):
            self._write(trainer, module, f"step{trainer.global_step:07d}")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.every_n_steps is not None:
            self._write(trainer, module, "final")

"""Sample figures written during training: 2-D scatter plots or image grids, as PNG files."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from repro.callbacks.rundir import last_step, run_dir
from repro.pixels import to_uint8
from repro.plotting import save_figure

__all__ = ["SamplePlots", "save_scatter", "save_grid"]


def save_scatter(fake: Tensor, real: Tensor, path: Path, title: str = "") -> Path:
    """Scatter of generated (and real) 2-D points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:gray", alpha=0.4, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:red", alpha=0.6, label="generated")
    ax.set_aspect("equal")
    lim = float(real.abs().max()) * 1.35
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    return save_figure(fig, path)


def save_grid(images: Tensor, path: Path) -> Path:
    """Image grid of samples in [-1, 1] (mapped by the fixed (x+1)/2, no per-batch rescaling)."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_uint8(images).float().div(255), path, nrow=int(len(images) ** 0.5))  # save_image re-quantizes exactly
    return path


class SamplePlots(L.Callback):
    """Every ``every_n_steps`` generator updates and at the end, plot samples of the fixed latent batch
    (2-D sets: ``n_points`` fresh samples) under ``<log_dir>/samples/`` (the last step once, as ``final``)."""

    def __init__(self, every_n_steps: int = 1000, n_points: int = 2000):
        if every_n_steps < 0:
            raise ValueError(f"samples.every_n_steps must be >= 0 (0: only the final plot), got {every_n_steps}")
        if n_points < 1:
            raise ValueError(f"samples.n_points must be >= 1, got {n_points}")
        self.every_n_steps, self.n_points = every_n_steps, n_points
        self.last_path: Path | None = None

    def _out_dir(self, trainer: L.Trainer) -> Path:
        return run_dir(trainer) / "samples"

    def _write(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> None:
        if trainer.global_rank != 0:
            return
        dm = trainer.datamodule
        path = self._out_dir(trainer) / f"{name}.png"
        if getattr(dm, "is_toy", False):
            with torch.random.fork_rng():  # plotting must not shift the training RNG stream
                fake = module.sample(self.n_points).float().cpu()
            self.last_path = save_scatter(fake, dm.real_batch(self.n_points), path, f"step {trainer.global_step}")
        else:
            self.last_path = save_grid(module.sample_grid().float().cpu(), path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(self.last_path)], step=trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0 and not last_step(trainer):
            self._write(trainer, module, f"step{trainer.global_step:07d}")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer, module, "final")

"""Trace of the generator's Jacobian conditioning over training (Odena et al. 2018, Fig. 1-3).

At a fixed set of ``n_samples`` latent vectors (seeded, the same at every evaluation) the callback
computes log(lambda_max / lambda_min) of J_z^T J_z (``repro.metrics.conditioning``) for the generator
being trained, logs its mean and standard deviation as scalar series to every logger, and at the end
saves the trace as ``<log_dir>/conditioning/trace.png`` and ``trace.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from repro.callbacks.rundir import run_dir
from repro.callbacks.spectra import log_png
from repro.metrics.conditioning import log_condition_stats
from repro.plotting import save_figure
from repro.portable import dumps

__all__ = ["ConditioningTrace", "save_trace_figure"]


def save_trace_figure(trace: list[dict[str, float]], path: Path) -> Path:
    """Mean log condition number against generator step, with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [t["step"] for t in trace]
    mean = torch.tensor([t["log_cond_mean"] for t in trace])
    std = torch.tensor([t["log_cond_std"] for t in trace])
    fig, ax = plt.subplots(figsize=(4.5, 3), dpi=100)
    ax.plot(steps, mean, color="tab:red", marker="o", ms=3)
    ax.fill_between(steps, mean - std, mean + std, color="tab:red", alpha=0.2)
    ax.set(xlabel="generator step", ylabel=r"log cond($J^T J$), mean $\pm$ std", title="generator conditioning")
    return save_figure(fig, path)


class ConditioningTrace(L.Callback):
    """Log-condition-number statistics at the start, every ``every_n_steps`` generator updates
    (0: only start and end; None: off) and at the end of training."""

    def __init__(self, every_n_steps: int | None = None, n_samples: int = 16, seed: int = 0):
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"conditioning.every_n_steps must be >= 0 or null (off), got {every_n_steps}")
        if n_samples < 1:
            raise ValueError(f"conditioning.n_samples must be >= 1, got {n_samples}")
        self.every_n_steps, self.n_samples, self.seed = every_n_steps, n_samples, seed
        self.trace: list[dict[str, float]] = []
        self.last_path: Path | None = None

    def _measure(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.every_n_steps is None or trainer.global_rank != 0 or (self.trace and self.trace[-1]["step"] == step):
            return
        z = torch.randn(self.n_samples, module.z_dim, generator=torch.Generator().manual_seed(self.seed))
        stats = log_condition_stats(module.generator, z.to(module.device, module.dtype))  # float64 nets: 64-true
        self.trace.append({"step": step, **stats})
        for logger in trainer.loggers:
            logger.log_metrics({f"conditioning/{k}": v for k, v in stats.items()}, step=step)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._measure(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._measure(trainer, module)
        if self.every_n_steps is None or trainer.global_rank != 0 or not self.trace:
            return
        out = run_dir(trainer) / "conditioning"
        self.last_path = save_trace_figure(self.trace, out / "trace.png")
        (out / "trace.json").write_text(dumps(self.trace, indent=1, sort_keys=False))
        log_png(trainer, "conditioning_trace", self.last_path, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"trace": self.trace}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trace = list(state_dict["trace"])

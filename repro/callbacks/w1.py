"""The exact batch W1 beside a critic's own estimate of it, through training (Liu, Gu & Samaras 2018, Fig. 2-3).

Every ``every_n_steps`` generator updates, on the step's last real batch x (n samples, what D saw last) and
n fresh fakes y = G(z), the callback logs to every logger:

- ``w1/exact``: the exact W1 of the two batches' empirical measures, cost ||x - y||_1 on flattened samples,
  from the same LP as WGAN-TS's step 1 (``repro.variants.wgants.exact_w1``, POT's network simplex);
- ``w1/critic``: the critic's estimate of the same quantity, mean_i D(x_i) - mean_j D(y_j) (the
  Kantorovich-Rubinstein dual evaluated at D; equal to W1 only for an optimal 1-Lipschitz D in this cost);
- ``w1/critic_over_exact``: their ratio (1 for an exact estimate; a weight-clipped WGAN critic is
  K-Lipschitz for an unknown K, so its ratio shows that scale).

For any variant whose D is trained with the Wasserstein loss (a critic: WGAN, WGAN-GP, WGAN-TS). D runs in eval mode
and the draws of the fakes come from a forked RNG, so the diagnostic changes neither training nor its
random stream. Cost per call: one L1 cost matrix O(n^2 d) and one LP (see ``paper_tables/icml2018-methods.yaml``
for the measured times), plus a G and two D forward passes of n samples.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from repro.losses import wasserstein_d_loss
from repro.variants.wgants import exact_w1, l1_cost

__all__ = ["BatchW1Trace", "batch_w1"]


def batch_w1(d_real: Tensor, d_fake: Tensor, real: Tensor, fake: Tensor) -> dict[str, float]:
    """The critic estimate mean D(x) - mean D(y) and the exact W1 (L1 cost) of the batches ``real``, ``fake``."""
    critic = float(d_real.mean() - d_fake.mean())
    exact = exact_w1(l1_cost(real, fake)).value
    return {"exact": exact, "critic": critic, "critic_over_exact": critic / exact if exact > 0 else float("nan")}


class BatchW1Trace(L.Callback):
    """Log ``w1/exact``, ``w1/critic`` and ``w1/critic_over_exact`` every ``every_n_steps`` generator updates.

    Use it as ``trainer.callbacks: [{class_path: repro.callbacks.w1.BatchW1Trace, init_args: {every_n_steps: 25}}]``.
    """

    def __init__(self, every_n_steps: int = 25):
        if every_n_steps < 1:
            raise ValueError(f"BatchW1Trace.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        objective = getattr(module, "objective", None)
        if getattr(objective, "d_loss", None) is not wasserstein_d_loss:
            raise ValueError(f"BatchW1Trace compares a Wasserstein critic's estimate with the exact batch W1, but "
                             f"{type(module).__name__} does not train D with the Wasserstein loss. Use it with a "
                             "critic-based variant (wgan, wgangp, wgants) or remove it from trainer.callbacks")

    def measure(self, module: L.LightningModule, real: Tensor) -> dict[str, float]:
        """The three values on ``real`` (one D batch) and as many fresh fakes; no effect on training."""
        d = module.discriminator
        was_training = d.training
        devices = [module.device] if module.device.type == "cuda" else []
        try:
            d.eval()
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                real_in = module.real_input(real)
                fake = module.d_fakes(len(real_in))
                return batch_w1(module.discriminate(real_in), module.discriminate(fake), real_in, fake)
        finally:
            d.train(was_training)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or trainer.global_rank != 0:
            return
        real = batch.chunk(module.n_dis)[-1]  # the iteration's last D batch, the one G's step saw
        values = self.measure(module, real)
        for logger in trainer.loggers:
            logger.log_metrics({f"w1/{k}": v for k, v in values.items()}, step=step)

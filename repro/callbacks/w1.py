"""The exact batch W1 beside a critic's own estimate of it, through training (Liu, Gu & Samaras 2018, Fig. 2-3).

Every ``every_n_steps`` generator updates, on the step's last real batch x (n samples, what D saw last) and
n fresh fakes y = G(z), the callback logs to every logger:

- ``w1/exact_l1``: the exact W1 of the two batches' empirical measures, cost ||x - y||_1 on flattened samples,
  from the same LP as WGAN-TS's step 1 (``repro.metrics.transport.exact_w1``, POT's network simplex), and
  ``w1/exact_l2``: the same with cost ||x - y||_2;
- ``w1/critic``: the critic's estimate, mean_i D(x_i) - mean_j D(y_j) (the Kantorovich-Rubinstein dual
  evaluated at D: equal to W1 in a cost only for an optimal D that is 1-Lipschitz in that norm);
- ``w1/critic_over_l1``, ``w1/critic_over_l2``: the estimate over each exact value (1 for an exact estimate).
  Each critic has its own norm: WGAN-TS regresses onto the L1 LP's potentials, WGAN-GP's penalty makes D
  1-Lipschitz in L2 (so its estimate targets ``exact_l2``, far below ``exact_l1`` for images), and a
  weight-clipped WGAN critic is K-Lipschitz for an unknown K (its ratio shows that scale).

For any variant whose D is trained with the Wasserstein loss (a critic: WGAN, WGAN-GP, WGAN-TS). D runs in eval mode
and the draws of the fakes come from a forked RNG, so the diagnostic changes neither training nor its
random stream. Cost per call: two cost matrices O(n^2 d) and two LPs (see ``paper_tables/icml2018-methods.yaml``
for the measured times), plus a G and two D forward passes of n samples.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from repro.losses import wasserstein_d_loss
from repro.metrics.transport import exact_w1, l1_cost

__all__ = ["BatchW1Trace", "batch_w1"]


def batch_w1(d_real: Tensor, d_fake: Tensor, real: Tensor, fake: Tensor) -> dict[str, float]:
    """The critic estimate mean D(x) - mean D(y) and the exact W1 of the batches ``real``, ``fake`` in the L1 and
    the L2 cost, with the estimate's ratio to each."""
    values = {"critic": float(d_real.mean() - d_fake.mean())}
    l2_cost = torch.cdist(real.flatten(1), fake.flatten(1), p=2)
    for name, cost in (("l1", l1_cost(real, fake)), ("l2", l2_cost)):
        exact = exact_w1(cost).value
        values[f"exact_{name}"] = exact
        values[f"critic_over_{name}"] = values["critic"] / exact if exact > 0 else float("nan")
    return values


class BatchW1Trace(L.Callback):
    """Log ``w1/critic``, ``w1/exact_l1``, ``w1/exact_l2`` and the ratios every ``every_n_steps`` generator updates.

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
        """The values on ``real`` (one D batch) and as many fresh fakes; no effect on training."""
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

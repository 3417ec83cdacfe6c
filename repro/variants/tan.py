"""Tempered Adversarial Networks (Sajjadi et al. 2018): a lens L between the real data and D.

Update order within one generator iteration t (t = generator updates so far, ``global_step``):
for each of the ``n_dis`` D steps, (1) D steps on (L(x), G(z)) with L held fixed, then (2) the lens
steps once on the same real batch and fakes against the just-updated D, via ``after_d_step``;
finally (3) G steps as in the base loop. For t > K the lens is removed: D sees x and L no longer
steps (the schedule has driven lambda to 0 and L to the identity).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from repro.variants.base import Betas, GANModule, _y, check_betas

__all__ = ["TAN", "tan_lambda"]


def tan_lambda(t: int, k: int) -> float:
    """Sajjadi et al. 2018, Sec. 3: lambda(t) = 1 - sin(t*pi / 2K) for t <= K, else 0."""
    if k < 1:
        raise ValueError(f"model.temper_steps (K) must be >= 1, got {k}")
    return 1.0 - math.sin(t * math.pi / (2 * k)) if t <= k else 0.0


class TAN(GANModule, name="tan"):
    """Any GAN objective with a tempering lens (Sajjadi et al. 2018, Fig. 1).

    Lens loss L_L = lambda(t) * L_L^A + L_L^R with L_L^A = -L_D (the lens works against D) and
    L_L^R = ||x - L(x)||^2 (per sample, averaged over the batch).

    Args:
        lens: the lens network (``repro.nets.lens.MLPLens`` / ``ConvLens``), output shaped like its input.
        loss: objective name, as for ``GANModule``.
        temper_steps: K, generator updates over which lambda falls from 1 to 0 (paper: 1e5).
        lr_lens, betas_lens: the lens' own Adam (default: D's settings).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        lens: nn.Module,
        loss: str = "nonsaturating",
        temper_steps: int = 100_000,
        lr_lens: float | None = None,
        betas_lens: Betas | None = None,
        **kwargs: Any,
    ):
        tan_lambda(0, temper_steps)  # validates K
        if lr_lens is not None and not lr_lens > 0:
            raise ValueError(f"model.lr_lens must be > 0 or null, got {lr_lens}")
        if betas_lens is not None:
            check_betas("betas_lens", betas_lens)
        super().__init__(generator, discriminator, loss=loss, **kwargs)
        self.lens, self.temper_steps = lens, temper_steps
        self.lr_lens, self.betas_lens = lr_lens, betas_lens

    @property
    def lens_active(self) -> bool:
        return self.global_step <= self.temper_steps

    def real_input(self, x: Tensor) -> Tensor:
        """L(x) while tempering (no gradient to L from D's loss), x once the lens is removed."""
        if not self.lens_active:
            return x
        with torch.no_grad():
            return self.lens(x)

    def lens_losses(self, real: Tensor, fake: Tensor, y: Tensor | None = None,
                    y_fake: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(L_L^A, L_L^R) for a real batch and (detached) fakes, D seeing their labels ``y`` / ``y_fake`` as in
        its own step (a conditional D); D's parameters get no gradient."""
        lensed = self.lens(real)
        recon = self.batch_mean((real - lensed).flatten(1).square().sum(1))
        with self.frozen_discriminator():
            adv = -self.objective.d_loss(self.discriminate(lensed, **_y(y)),
                                         self.discriminate(fake.detach(), **_y(y_fake)))
        return adv, recon

    def lens_step(self, real: Tensor, fake: Tensor, lam: float, y: Tensor | None = None,
                  y_fake: Tensor | None = None) -> Tensor:
        """One update of L on lambda * L_L^A + L_L^R; returns the reconstruction loss before the step."""
        opt = self.optimizers()[2]
        adv, recon = self.lens_losses(real, fake, y, y_fake)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(lam * adv + recon)
        self.step_uncounted(opt)
        return recon.detach()

    def after_d_step(self, real: Tensor, fake: Tensor, y: Tensor | None = None, y_fake: Tensor | None = None) -> None:
        if not self.lens_active:
            return
        lam = tan_lambda(self.global_step, self.temper_steps)
        recon = self.lens_step(real, fake, lam, y, y_fake)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({"train/lens_lambda": lam, "train/lens_recon": recon})

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        lr = self.lr_lens if self.lr_lens is not None else hp.lr_d
        betas = tuple(self.betas_lens if self.betas_lens is not None else hp.betas_d)
        return [self.make_optimizer(self.lens.parameters(), lr, betas)]

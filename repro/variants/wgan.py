"""Wasserstein GANs: weight clipping (Arjovsky et al. 2017) and gradient penalty (Gulrajani et al. 2017)."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from repro.regularizers import GradientPenalty
from repro.variants.base import Betas, GANModule

__all__ = ["WGAN", "WGANGP"]


class WGAN(GANModule, name="wgan"):
    """Critic loss E f(G(z)) - E f(x); every critic weight clipped to [-clip, clip] after each update
    (Arjovsky et al. 2017, Alg. 1: c = 0.01, RMSProp lr 5e-5, n_critic = 5)."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        clip: float = 0.01,
        n_dis: int = 5,
        lr_g: float = 5e-5,
        lr_d: float = 5e-5,
        optimizer: Literal["adam", "rmsprop"] = "rmsprop",
        **kwargs: Any,
    ):
        if not clip > 0:
            raise ValueError(f"model.clip must be > 0, got {clip}")
        super().__init__(
            generator, discriminator, loss="wasserstein", n_dis=n_dis, lr_g=lr_g, lr_d=lr_d, optimizer=optimizer, **kwargs
        )
        self.clip = clip
        self._critic_params = list(discriminator.parameters())

    @torch.no_grad()
    def after_d_step(self, real: Tensor, fake: Tensor, y: Tensor | None = None, y_fake: Tensor | None = None) -> None:
        """Clip every critic weight to [-clip, clip] (Alg. 1, line 7); the batch and its labels play no part."""
        torch._foreach_clamp_min_(self._critic_params, -self.clip)
        torch._foreach_clamp_max_(self._critic_params, self.clip)


class WGANGP(GANModule, name="wgangp"):
    """Critic loss plus gradient penalty gp_weight * E(||grad D(x_hat)|| - 1)^2 (Gulrajani et al. 2017,
    Alg. 1: lambda = 10, Adam lr 1e-4, betas (0, 0.9), n_critic = 5). A critic with batch norm or minibatch
    discrimination is refused (the penalty is per input; the paper's Sec. 4 drops batch norm from the critic)."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gp_weight: float = 10.0,
        n_dis: int = 5,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        betas_g: Betas = (0.0, 0.9),
        betas_d: Betas = (0.0, 0.9),
        **kwargs: Any,
    ):
        d_regularizers = [GradientPenalty(gp_weight), *(kwargs.pop("d_regularizers", None) or [])]
        super().__init__(
            generator, discriminator, loss="wasserstein", n_dis=n_dis, lr_g=lr_g, lr_d=lr_d,
            betas_g=betas_g, betas_d=betas_d, d_regularizers=d_regularizers, **kwargs,
        )

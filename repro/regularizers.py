"""Terms added to a player's loss, composable with any variant.

A regularizer is called as ``reg(module, a, b)``: for D terms ``(real, fake)`` as D sees them, for
G terms ``(z, fake)``. It returns a scalar to add to that player's loss.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from repro.variants.base import GANModule

__all__ = ["Regularizer", "GradientPenalty"]


class Regularizer:
    """Base class: ``__call__(module, a, b) -> scalar tensor``."""

    def __call__(self, module: "GANModule", a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError


class GradientPenalty(Regularizer):
    """Gulrajani et al. 2017, eq. 3: weight * E[(||grad_x D(x_hat)|| - 1)^2] at random interpolates
    x_hat = eps * x + (1 - eps) * x_fake, eps ~ U[0, 1] per sample."""

    def __init__(self, weight: float = 10.0, center: float = 1.0):
        if weight < 0:
            raise ValueError(f"GradientPenalty.weight must be >= 0, got {weight}")
        self.weight, self.center = weight, center

    def __call__(self, module: "GANModule", real: Tensor, fake: Tensor) -> Tensor:
        eps = torch.rand((len(real),) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        out = module.discriminate(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(dim=1)
        return self.weight * (norm - self.center).square().mean()

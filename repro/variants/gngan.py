"""GN-GAN (Wu et al. 2021): gradient normalization of the discriminator's output."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from repro.normalization import SpectralNorm, check_per_sample, has_parametrization, weight_layers
from repro.variants.base import GANModule

__all__ = ["GNGAN", "gradient_normalize"]


def gradient_normalize(f: nn.Module, x: Tensor) -> Tensor:
    """Gradient normalization (Wu et al. 2021; authors' models/gradnorm.py), per sample:
    f^(x) = f(x) / (||grad_x f(x)|| + |f(x)|).

    The input gradient is taken with ``create_graph=True``, so whatever is trained through f^ (D's
    weights in D's step, G via x in G's step) differentiates through the normalization itself.
    No epsilon is added, as in the paper (the denominator is 0 only where f(x) = 0 and grad f(x) = 0).
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    out = f(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # row i: grad D(x_i) (GNGAN refuses coupling)
    grad_norm = grad.flatten(1).norm(dim=1)
    return out / (grad_norm + out.abs())


class GNGAN(GANModule, name="gngan"):
    """GANModule with D^ = gradient-normalized D in both players' updates (Wu et al. 2021; the authors'
    train.py applies it in both steps).

    D^ lies in [-1, 1]; the CNN setting's BCE is ``loss: bounded_bce`` (BCE on (D^ + 1) / 2), the
    ResNet setting's is ``loss: hinge``. D must have no layer that couples the samples of a batch (batch
    norm, minibatch discrimination: the per-sample gradient is then not defined) and no spectral norm (the
    paper's point is to replace it).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str = "hinge", **kwargs: Any):
        check_per_sample(discriminator, "GNGAN (gradient normalization)")
        if any(has_parametrization(m, SpectralNorm) for m in weight_layers(discriminator)):
            raise ValueError(
                "model.discriminator: GNGAN's discriminator must not use spectral norm; "
                "build it with norm: none, weight or layer"
            )
        super().__init__(generator, discriminator, loss=loss, **kwargs)

    def discriminate(self, x: Tensor) -> Tensor:
        return gradient_normalize(self.discriminator, x)

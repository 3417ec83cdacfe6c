"""BigGAN-lite (Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis").

What the variant adds to the shared loop: the hinge loss (Sec. 3, after SAGAN), the modified orthogonal
regularisation on G (Sec. 3.1, ``ortho_weight``: beta; ``repro.regularizers.ModifiedOrthogonalRegularizer``).
The rest is configuration of pieces any variant can use: the generator (``repro.nets.BigGANGenerator``: shared
class embedding, hierarchical latents, SN in G), spectral norm in D (the D's ``norm: spectral``), the EMA of G
from a start step (``ema_decay``, ``ema_start``; samples and metrics use it, with standing statistics), and
the truncation trick at sampling (``evaluation.truncation``: one column per threshold).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.regularizers import ModifiedOrthogonalRegularizer
from repro.variants.base import GANModule

__all__ = ["BigGAN"]


class BigGAN(GANModule, name="biggan"):
    """GANModule with BigGAN's defaults: hinge loss, Adam (0, 0.999), and ``ortho_weight`` > 0 adds
    beta * ||W W^T * (1 - I)||_F^2 over G's weights to G's loss (paper: beta = 1e-4; BigGAN-PyTorch's CIFAR
    script: off)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str = "hinge", ortho_weight: float = 0.0,
                 betas_g: tuple[float, float] = (0.0, 0.999), betas_d: tuple[float, float] = (0.0, 0.999),
                 **kwargs: Any):
        if ortho_weight < 0:
            raise ValueError(f"model.ortho_weight must be >= 0 (0: off), got {ortho_weight}")
        super().__init__(generator, discriminator, loss=loss, betas_g=betas_g, betas_d=betas_d, **kwargs)
        if ortho_weight > 0:
            self.g_regularizers.append(ModifiedOrthogonalRegularizer(ortho_weight))

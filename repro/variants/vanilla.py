"""The original GAN (Goodfellow et al. 2014) in its two generator objectives."""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.variants.base import GANModule

__all__ = ["VanillaGAN", "NSGAN"]


class VanillaGAN(GANModule, name="vanilla"):
    """Minimax GAN: G minimizes E log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any):
        super().__init__(generator, discriminator, loss="minimax", **kwargs)


class NSGAN(GANModule, name="nsgan"):
    """Non-saturating GAN: G maximizes E log D(G(z)) (Goodfellow et al. 2014, Sec. 3)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any):
        super().__init__(generator, discriminator, loss="nonsaturating", **kwargs)

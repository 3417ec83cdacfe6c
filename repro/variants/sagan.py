"""SAGAN (Zhang et al. 2019, Sec. 5): spectral norm in G as well as D, the hinge loss, and TTUR.

The self-attention block itself is a net option (``attention_at`` on the CNN, ResNet and DCGAN nets,
``repro.nets.attention``), so this variant only adds what the existing pieces lack: SN on every weight layer of
G (Sec. 5.1; SN-GAN normalizes only D). The defaults are the paper's: hinge loss (eq. 4), D lr 4e-4, G lr 1e-4
(TTUR, Sec. 5.2), Adam betas (0, 0.9) for both, one D step per G step (Sec. 6).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.variants.base import Betas, GANModule
from repro.variants.sngan import sn_discriminator, spectrally_normalize

__all__ = ["SAGAN"]


class SAGAN(GANModule, name="sagan"):
    """SN-GAN's D (spectral norm on every layer, no batch norm) plus spectral norm on every G weight layer
    (linear, convolution, transposed convolution, the attention blocks' 1x1 convolutions).

    G keeps its batch norm (the paper's G has conditional BN). Self-attention comes from the nets' ``attention_at``.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str = "hinge", n_dis: int = 1,
                 lr_g: float = 1e-4, lr_d: float = 4e-4, betas_g: Betas = (0.0, 0.9), betas_d: Betas = (0.0, 0.9),
                 **kwargs: Any):
        sn_discriminator(discriminator, "SAGAN")
        spectrally_normalize(generator, "model.generator", "SAGAN")
        super().__init__(generator, discriminator, loss=loss, n_dis=n_dis, lr_g=lr_g, lr_d=lr_d, betas_g=betas_g,
                         betas_d=betas_d, **kwargs)

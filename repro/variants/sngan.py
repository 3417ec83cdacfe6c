"""SN-GAN (Miyato et al. 2018): every discriminator weight layer spectrally normalized."""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from repro.normalization import SpectralNorm, batch_norm_names, has_parametrization, spectral_norm, weight_layers
from repro.variants.base import GANModule

__all__ = ["SNGAN"]


class SNGAN(GANModule, name="sngan"):
    """GANModule whose D has W_SN = W / sigma(W) on every linear / conv layer (Miyato et al. 2018, Alg. 1).

    Layers built with ``norm: spectral`` are kept; every other weight layer gets spectral norm here.
    A D with batch norm or another weight parametrization is refused (the paper's SN discriminators
    have neither). Hinge loss by default (the paper's eq. 16 / 17); ``loss`` selects any objective,
    e.g. ``nonsaturating`` for the settings A-F of Table 1.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str = "hinge", **kwargs: Any):
        if names := batch_norm_names(discriminator):
            raise ValueError(
                f"model.discriminator: SNGAN's discriminator has no batch norm, but {names[0]!r} is one; "
                "build it with norm: spectral or none"
            )
        for layer in weight_layers(discriminator):
            if has_parametrization(layer, SpectralNorm):
                continue
            if parametrize.is_parametrized(layer, "weight"):
                raise ValueError(
                    "model.discriminator: SNGAN needs spectral norm alone on each weight layer; "
                    "build it with norm: spectral or none (not weight)"
                )
            spectral_norm(layer)
        super().__init__(generator, discriminator, loss=loss, **kwargs)

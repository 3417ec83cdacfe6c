"""SN-GAN (Miyato et al. 2018): every discriminator weight layer spectrally normalized."""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from repro.normalization import SpectralNorm, batch_norm_names, has_parametrization, spectral_norm
from repro.variants.base import GANModule

__all__ = ["SNGAN", "spectrally_normalize", "sn_discriminator"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def spectrally_normalize(net: nn.Module, key: str, variant: str) -> None:
    """Spectral norm (Miyato et al. 2018, Alg. 1) on every linear / (transposed) convolution layer of ``net``
    that lacks it; ``ValueError`` naming ``key`` if a layer has another weight parametrization."""
    for layer in list(net.modules()):
        if not isinstance(layer, _WEIGHT_LAYERS) or has_parametrization(layer, SpectralNorm):
            continue
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(
                f"{key}: {variant} needs spectral norm alone on each weight layer; "
                "build it with norm: spectral or none (not weight)"
            )
        spectral_norm(layer)


def sn_discriminator(discriminator: nn.Module, variant: str) -> None:
    """SN-GAN's D: refuse batch norm (the paper's SN discriminators have none), then spectral norm on every layer."""
    if names := batch_norm_names(discriminator):
        raise ValueError(
            f"model.discriminator: {variant}'s discriminator has no batch norm, but {names[0]!r} is one; "
            "build it with norm: spectral or none (batch_norm: false)"
        )
    spectrally_normalize(discriminator, "model.discriminator", variant)


class SNGAN(GANModule, name="sngan"):
    """GANModule whose D has W_SN = W / sigma(W) on every linear / conv layer (Miyato et al. 2018, Alg. 1).

    Layers built with ``norm: spectral`` are kept; every other weight layer gets spectral norm here.
    A D with batch norm or another weight parametrization is refused (the paper's SN discriminators
    have neither). Hinge loss by default (the paper's eq. 16 / 17); ``loss`` selects any objective,
    e.g. ``nonsaturating`` for the settings A-F of Table 1.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str = "hinge", **kwargs: Any):
        sn_discriminator(discriminator, "SNGAN")
        super().__init__(generator, discriminator, loss=loss, **kwargs)

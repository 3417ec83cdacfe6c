"""cGAN with a projection discriminator (Miyato & Koyama 2018): G(z, y) with class-conditional batch norm,
D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (Eq. 3; ``repro.nets.ProjectionDiscriminator``)."""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.nets.conditional import ProjectionDiscriminator
from repro.variants.base import GANModule

__all__ = ["ProjectionGAN"]


class ProjectionGAN(GANModule, name="projection"):
    """Class-conditional GAN on ``num_classes`` labels with a projection D. Hinge loss by default, as in the
    paper's experiments (its Sec. 5: "the hinge version of the adversarial loss"); ``loss`` selects any objective
    (e.g. ``nonsaturating``). The nets must be built for the labels: G with ``num_classes`` (conditional BN), D a
    ``ProjectionDiscriminator`` around any repro D (spectral norm throughout D in the paper: ``norm: spectral``)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, num_classes: int, loss: str = "hinge",
                 **kwargs: Any):
        if not isinstance(discriminator, ProjectionDiscriminator):
            raise ValueError(f"model.discriminator: ProjectionGAN needs repro.nets.ProjectionDiscriminator around a D "
                             f"(got {type(discriminator).__name__}); see configs/mnist/projection.yaml")
        super().__init__(generator, discriminator, loss=loss, num_classes=num_classes, **kwargs)

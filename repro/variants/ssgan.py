"""Self-supervised GAN (Chen et al. 2019, eq. 1-2): a 4-way rotation classifier on D's features.

    L_D = L_D^GAN + beta  * E_{x ~ P_data} CE(r | x^r),     beta  = 1.0,
    L_G = L_G^GAN + alpha * E_{x ~ P_G}    CE(r | x^r),     alpha = 0.2,

with x^r the image rotated by r * 90 degrees and CE the cross-entropy of D's rotation head Q_D(r | x^r).
The rotated batch follows Mimicry (``torch_mimicry/nets/ssgan/ssgan_base.py``, the CIFAR-10 anchor): the
i-th of n images gets rotation r = floor(4 i / n), so each quarter of the batch is rotated by one of
0 / 90 / 180 / 270 degrees; the GAN loss sees the upright batch. (compare_gan instead rotates a quarter of
the batch by all four angles.) Both terms are regularizers on the base loop's hooks: D's on the real batch
D sees, G's on the fakes. Image data only: 2-D samples cannot be rotated and are refused before training.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.normalization import wrap
from repro.regularizers import Regularizer
from repro.variants.base import GANModule

__all__ = ["SSGAN", "RotationDiscriminator", "RotationLoss", "rotate_quarters", "rotation_loss", "add_rotation_losses",
           "check_rotatable"]

ROTATIONS = 4


def rotate_quarters(x: Tensor) -> tuple[Tensor, Tensor]:
    """Image i of n rotated by r_i * 90 degrees (in the (H, W) plane), r_i = floor(4 i / n); returns (images, r)."""
    labels = torch.arange(len(x), device=x.device) * ROTATIONS // len(x)
    rotated = torch.cat([torch.rot90(x[labels == r], r, dims=(2, 3)) for r in range(ROTATIONS)])
    return rotated, labels


class RotationDiscriminator(nn.Module):
    """``discriminator`` plus a linear rotation head on its features (Q_D); D's own output is unchanged (a
    class-conditional D keeps its labels: ``num_classes`` and ``forward(x, y)`` pass through)."""

    def __init__(self, discriminator: nn.Module, head_norm: str = "none"):
        super().__init__()
        for attr in ("features", "feature_dim"):
            if not hasattr(discriminator, attr):
                raise ValueError(f"the rotation loss needs a discriminator exposing `{attr}` (repro.nets.*) for its "
                                 "rotation head")
        self.inner = discriminator
        self.feature_dim = discriminator.feature_dim
        self.num_classes: int | None = getattr(discriminator, "num_classes", None)
        self.rotation_head = wrap(nn.Linear(discriminator.feature_dim, ROTATIONS), head_norm)

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x)

    @property
    def head(self) -> nn.Module:
        return self.inner.head

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.inner(x) if y is None else self.inner(x, y)

    def rotation_logits(self, x: Tensor) -> Tensor:
        return self.rotation_head(self.inner.features(x))


def rotation_loss(discriminator: RotationDiscriminator, x: Tensor) -> Tensor:
    """CE(r | x^r): the cross-entropy of the rotation head on ``x`` with its quarters rotated (``rotate_quarters``)."""
    rotated, labels = rotate_quarters(x)
    return F.cross_entropy(discriminator.rotation_logits(rotated), labels)


class RotationLoss(Regularizer):
    """weight * CE(r | x^r) on the rotated real batch (a D term, ``on="real"``) or rotated fakes (a G term)."""

    name = "rotation"

    def __init__(self, weight: float, on: str):
        if weight < 0 or on not in ("real", "fake"):
            raise ValueError(f"RotationLoss needs weight >= 0 and on in (real, fake), got {weight}, {on!r}")
        self.weight, self.on = weight, on

    def __call__(self, module: Any, a: Tensor, b: Tensor) -> Tensor:
        return self.weight * rotation_loss(module.discriminator, a if self.on == "real" else b)


def add_rotation_losses(module: GANModule, d_weight: float, g_weight: float) -> None:
    """Append the rotation terms of Chen et al. 2019, eq. 1-2 to ``module``'s D and G losses (beta = ``d_weight``
    on rotated real images, alpha = ``g_weight`` on rotated fakes); ``module.discriminator`` must be a
    ``RotationDiscriminator``. SSGAN, S3GAN and S2GAN's pre-stage share this code."""
    module.d_regularizers.append(RotationLoss(d_weight, "real"))
    module.g_regularizers.append(RotationLoss(g_weight, "fake"))


class SSGAN(GANModule, name="ssgan"):
    """Any GAN loss (Mimicry's SSGAN: hinge) plus the rotation losses (Chen et al. 2019, eq. 1-2).

    Args:
        d_rotation_weight: beta, the weight of the real-image rotation loss in D's loss (paper: 1.0).
        g_rotation_weight: alpha, the weight of the fake-image rotation loss in G's loss (paper: 0.2).
        rotation_head_norm: normalization of the rotation head (Mimicry: spectral, like its D).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        d_rotation_weight: float = 1.0,
        g_rotation_weight: float = 0.2,
        rotation_head_norm: str = "none",
        **kwargs: Any,
    ):
        super().__init__(generator, RotationDiscriminator(discriminator, rotation_head_norm), **kwargs)
        add_rotation_losses(self, d_rotation_weight, g_rotation_weight)

    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        check_rotatable(type(self).__name__, sample_shape)
        super().check_sample_shape(sample_shape)


def check_rotatable(variant: str, sample_shape: tuple[int, ...]) -> None:
    """One clear ``ValueError`` unless samples of ``sample_shape`` are square images that 90-degree turns keep."""
    if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
        raise ValueError(
            f"{variant} rotates images by 90 degrees: it needs square image data (C, H, W), but the data's samples "
            f"have shape {tuple(sample_shape)}; use an image data set (e.g. data.dataset: mnist or cifar10)"
        )

"""Class-conditional discriminators around any repro D (its ``features`` phi and linear ``head`` psi).

- ``ProjectionDiscriminator``: Miyato & Koyama 2018, "cGANs with Projection Discriminator", Eq. 3 with
  V = embed: D(x, y) = psi(phi(x)) + <embed(y), phi(x)>. The embedding is spectrally normalized in their
  code (``SNEmbedID``, Glorot-uniform init), hence ``norm: spectral`` by default.
- ``LabelPredictingDiscriminator``: Lucic et al. 2019 (S3GAN): a projection D whose unknown real labels are
  predicted by a linear classifier on its features.
- ``AuxiliaryClassifierDiscriminator``: Odena et al. 2017 (AC-GAN), Sec. 3: a second linear head on the same
  features gives class logits, P(C | X); D itself does not see the label.

A D that takes labels has ``num_classes`` set (and ``forward(x, y)``), as a conditional generator does;
the auxiliary-classifier D has ``aux_classes`` instead (its ``forward(x)`` takes none).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from repro.nets.base import Discriminator
from repro.nets.conditional_bn import check_labels
from repro.normalization import wrap

__all__ = ["ProjectionDiscriminator", "LabelPredictingDiscriminator", "AuxiliaryClassifierDiscriminator"]


def _take_body(discriminator: nn.Module, what: str) -> tuple[nn.Module, int]:
    """The wrapped D's head (removed from it) and its feature width; one clear error for a net without them."""
    for attr in ("features", "feature_dim", "head"):
        if not hasattr(discriminator, attr):
            raise ValueError(f"{what} needs a discriminator exposing `{attr}` (repro.nets.*)")
    head = discriminator.head
    discriminator.head = None  # psi lives in the wrapper
    return head, discriminator.feature_dim


def _check_classes(num_classes: int, what: str) -> None:
    if num_classes < 2:
        raise ValueError(f"{what}.num_classes must be >= 2, got {num_classes}")


class ProjectionDiscriminator(Discriminator):
    """D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018, Eq. 3): ``discriminator``'s features
    phi and head psi, plus a class embedding of its feature width wrapped by ``norm``."""

    def __init__(self, discriminator: nn.Module, num_classes: int, norm: str = "spectral"):
        super().__init__()
        _check_classes(num_classes, "ProjectionDiscriminator")
        self.head, self.feature_dim = _take_body(discriminator, "the projection discriminator")
        self.inner, self.num_classes = discriminator, num_classes
        embed = nn.Embedding(num_classes, self.feature_dim)
        nn.init.xavier_uniform_(embed.weight)
        self.embed = wrap(embed, norm)

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        check_labels(self, y)
        return self.project(self.features(x), y)

    def project(self, phi: Tensor, y: Tensor) -> Tensor:
        """psi(phi) + <embed(y), phi> for features ``phi`` already computed."""
        return self.head(phi).squeeze(1) + (self.embed(y) * phi).sum(1)


class LabelPredictingDiscriminator(Discriminator):
    """A projection D plus a linear classifier c on its features (Lucic et al. 2019, Sec. 3.2, "co-training"):
    a real example whose label is unknown (-1) is projected with the predicted label argmax c(phi(x)) (a hard
    label: no gradient flows through it), one with a label with its own; ``norm`` wraps c. ``outputs(x, y)``
    gives D's output and c's logits from one feature pass (the classifier's loss needs both)."""

    def __init__(self, projection: ProjectionDiscriminator, norm: str = "none"):
        super().__init__()
        if not isinstance(projection, ProjectionDiscriminator):
            raise ValueError(f"LabelPredictingDiscriminator needs a repro.nets.ProjectionDiscriminator, got "
                             f"{type(projection).__name__}")
        self.projection, self.num_classes = projection, projection.num_classes
        self.feature_dim = projection.feature_dim
        self.classifier = wrap(nn.Linear(self.feature_dim, self.num_classes), norm)

    @property
    def head(self) -> nn.Module:
        return self.projection.head

    def features(self, x: Tensor) -> Tensor:
        return self.projection.features(x)

    def outputs(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """D(x, y with each -1 replaced by the predicted class) and the class logits c(phi(x))."""
        phi = self.features(x)
        logits = self.classifier(phi)
        return self.projection.project(phi, torch.where(y >= 0, y, logits.argmax(1))), logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("LabelPredictingDiscriminator needs labels y (-1 where unknown)")
        return self.outputs(x, y)[0]


class AuxiliaryClassifierDiscriminator(Discriminator):
    """``discriminator`` with a second linear head over its features to ``aux_classes`` class logits (AC-GAN);
    ``forward(x)`` is the source output, ``source_and_classes(x)`` both from one pass. ``norm`` wraps the new head."""

    def __init__(self, discriminator: nn.Module, num_classes: int, norm: str = "none"):
        super().__init__()
        _check_classes(num_classes, "AuxiliaryClassifierDiscriminator")
        self.head, self.feature_dim = _take_body(discriminator, "the auxiliary-classifier discriminator")
        self.inner, self.aux_classes = discriminator, num_classes
        self.classifier = wrap(nn.Linear(self.feature_dim, num_classes), norm)

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x)

    def source_and_classes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """D's source output (one per sample) and class logits (N, aux_classes) from one feature pass."""
        phi = self.features(x)
        return self.head(phi).squeeze(1), self.classifier(phi)

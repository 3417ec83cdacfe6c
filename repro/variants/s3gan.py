"""S3GAN (Lucic et al. 2019, "High-Fidelity Image Generation With Fewer Labels"; google/compare_gan, ``s3gan.py``):
a class-conditional GAN (conditional-BN G, projection D) that has labels for only a fraction of the real data.

- Sec. 3.2 (co-training, semi-supervised): a linear classifier c on D's features phi is trained with the
  cross-entropy on the labelled real examples of each batch (added to D's loss with weight ``class_weight``);
  an unlabelled real example is projected with c's predicted class argmax c(phi(x)) (a hard label, no gradient
  through it), a labelled one with its own label, a fake with the label G drew it for
  (``repro.nets.LabelPredictingDiscriminator``).
- Sec. 3.3 (self-supervision): S3GAN keeps the rotation losses of SSGAN (Chen et al. 2019, eq. 1-2), here
  ``repro.variants.ssgan``'s code (``d_rotation_weight`` / ``g_rotation_weight``; both 0: no rotation head).

Which real examples are labelled is one fixed subset of the training items: round(labelled_fraction * N) of
them drawn with ``labelled_seed`` (``labelled_subset``), the same in every run, epoch and rank; the data module
serves -1 as the label of the others (``training_labels``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nets.conditional import LabelPredictingDiscriminator, ProjectionDiscriminator
from repro.variants.base import GANModule
from repro.variants.ssgan import RotationDiscriminator, add_rotation_losses, check_rotatable

__all__ = ["S3GAN", "labelled_subset", "labelled_cross_entropy"]


def labelled_subset(n: int, fraction: float, seed: int) -> Tensor:
    """A boolean mask over ``n`` items with exactly round(fraction * n) of them set, chosen by a permutation
    seeded with ``seed``."""
    count = round(fraction * n)
    if not 0 < fraction <= 1 or count < 1:
        raise ValueError(f"model.labelled_fraction must be in (0, 1] and keep at least one of the {n} training "
                         f"items labelled, got {fraction}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]] = True
    return mask


def labelled_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """The mean cross-entropy of ``logits`` over the examples with a label (``y >= 0``); 0 when none has one."""
    known = y >= 0
    per_example = F.cross_entropy(logits, y.clamp(min=0), reduction="none") * known
    return per_example.sum() / known.sum().clamp(min=1)


class S3GAN(GANModule, name="s3gan"):
    """S3GAN on ``num_classes`` labels, of which a ``labelled_fraction`` of the training items have theirs.

    Args:
        discriminator: a ``repro.nets.ProjectionDiscriminator``; the classifier (and rotation head) go on top.
        labelled_fraction: the share of training items whose labels are used (the paper: 0.1 and 0.2 on ImageNet).
        labelled_seed: seeds the choice of the labelled items (independent of the run's seed).
        class_weight: weight of the classifier's cross-entropy in D's loss (compare_gan's ``weight_class_loss``: 1).
        classifier_norm: normalization of the classifier (compare_gan: spectral when D has it).
        d_rotation_weight, g_rotation_weight, rotation_head_norm: the rotation losses (as ``SSGAN``).
        loss: the objective (the paper: hinge).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        num_classes: int,
        labelled_fraction: float = 0.1,
        labelled_seed: int = 0,
        class_weight: float = 1.0,
        classifier_norm: str = "none",
        d_rotation_weight: float = 1.0,
        g_rotation_weight: float = 0.2,
        rotation_head_norm: str = "none",
        loss: str = "hinge",
        **kwargs: Any,
    ):
        if not 0 < labelled_fraction <= 1:
            raise ValueError(f"model.labelled_fraction must be in (0, 1], got {labelled_fraction}")
        if not class_weight >= 0:
            raise ValueError(f"model.class_weight must be >= 0, got {class_weight}")
        if not isinstance(discriminator, ProjectionDiscriminator):
            raise ValueError(f"model.discriminator: S3GAN needs repro.nets.ProjectionDiscriminator around a D (got "
                             f"{type(discriminator).__name__}); see configs/mnist/s3gan.yaml")
        d: nn.Module = LabelPredictingDiscriminator(discriminator, classifier_norm)
        rotation = d_rotation_weight > 0 or g_rotation_weight > 0
        if rotation:
            d = RotationDiscriminator(d, rotation_head_norm)
        super().__init__(generator, d, loss=loss, num_classes=num_classes, **kwargs)
        self.rotation = rotation
        if rotation:
            add_rotation_losses(self, d_rotation_weight, g_rotation_weight)
        self.labelled_fraction, self.labelled_seed, self.class_weight = labelled_fraction, labelled_seed, class_weight

    @property
    def predictor(self) -> LabelPredictingDiscriminator:
        """The projection D with its classifier (inside the rotation wrapper, if any)."""
        return self.discriminator.inner if self.rotation else self.discriminator

    def training_labels(self, datamodule: Any) -> Tensor:
        """The set's labels on the fixed labelled subset, -1 elsewhere."""
        datamodule.check_labels(self.num_classes)
        labels = datamodule.class_labels.clone()
        labels[~labelled_subset(len(labels), self.labelled_fraction, self.labelled_seed)] = -1
        return labels

    def discriminator_loss(self, real: Tensor, fake: Tensor, y: Tensor | None = None,
                           y_fake: Tensor | None = None) -> Tensor:
        """D's objective (unknown real labels predicted) + class_weight * the classifier's cross-entropy on the
        labelled real examples (Sec. 3.2) + D's regularizers (the rotation loss, Sec. 3.3)."""
        real_in = self.real_input(real)
        real_out, logits = self.predictor.outputs(real_in, y)
        loss = self.objective.d_loss(real_out, self.discriminate(fake, y_fake))
        loss = loss + self.class_weight * labelled_cross_entropy(logits, y)
        return self.add_regularizers(loss, "d", real_in, fake)

    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        if self.rotation:
            check_rotatable(type(self).__name__, sample_shape)
        super().check_sample_shape(sample_shape)

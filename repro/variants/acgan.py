"""AC-GAN (Odena, Olah & Shlens 2017, "Conditional Image Synthesis with Auxiliary Classifier GANs", Sec. 3).

G(z, c) for a class c drawn uniformly; D gives P(S | X) (real or fake) and, from a second head on the same
features, P(C | X) (``repro.nets.AuxiliaryClassifierDiscriminator``). With
L_S = E[log P(S=real | X_real)] + E[log P(S=fake | X_fake)] and
L_C = E[log P(C=c | X_real)] + E[log P(C=c | X_fake)] (Eqs. 2-3),
D maximizes L_S + w L_C and G maximizes w L_C - L_S; -L_S is the configured objective (``nonsaturating``
by default: G maximizes log P(S=real | X_fake), as the paper's code does), -L_C two cross-entropies. ``aux_weight``
w is 1 in the paper. ``fake_class_loss`` false drops L_C's fake term from D's loss (G's is unchanged): D's class
head then learns from the real images only, as StudioGAN's AC-GAN trains it (`POSTECH-CVLab/PyTorch-StudioGAN`,
src/worker.py, `d_cond_mtd: AC`; its `ADC` adds a fake term over separate fake classes). G is conditioned by
class-conditional batch norm here (the paper feeds a class embedding with z); D sees no label.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from repro.nets.conditional import AuxiliaryClassifierDiscriminator
from repro.variants.base import GANModule

__all__ = ["ACGAN"]


class ACGAN(GANModule, name="acgan"):
    """AC-GAN on ``num_classes`` labels; ``aux_weight`` weighs the class log-likelihood L_C in both losses;
    ``fake_class_loss``: D's L_C includes the fakes (the paper) or takes the real images only."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, num_classes: int,
                 loss: str = "nonsaturating", aux_weight: float = 1.0, fake_class_loss: bool = True, **kwargs: Any):
        if not aux_weight >= 0:
            raise ValueError(f"model.aux_weight must be >= 0, got {aux_weight}")
        super().__init__(generator, discriminator, loss=loss, num_classes=num_classes, **kwargs)
        self.aux_weight = aux_weight
        self.fake_class_loss = fake_class_loss

    def check_label_nets(self) -> None:
        """G takes the labels; D does not, but classifies into ``num_classes`` classes."""
        self.check_net_labels("generator", self.generator, getattr(self.generator, "num_classes", None))
        d = self.discriminator
        if not isinstance(d, AuxiliaryClassifierDiscriminator) or d.aux_classes != self.num_classes:
            raise ValueError(f"model.discriminator: ACGAN needs repro.nets.AuxiliaryClassifierDiscriminator with "
                             f"num_classes {self.num_classes} around a D (got {type(d).__name__}); "
                             "see configs/mnist/acgan.yaml")

    def discriminate(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """P(S | X) as a logit; D sees no label."""
        return self.discriminator(x)

    def class_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """-E[log P(C = y | X)]: the cross-entropy of D's class logits."""
        return self.batch_mean(F.cross_entropy(logits, y, reduction="none"))

    def discriminator_loss(self, real: Tensor, fake: Tensor, y: Tensor | None = None,
                           y_fake: Tensor | None = None) -> Tensor:
        """-(L_S + w L_C) plus D's regularizers (L_C on the real images only without ``fake_class_loss``)."""
        real_in = self.real_input(real)
        source_real, classes_real = self.discriminator.source_and_classes(real_in)
        source_fake, classes_fake = self.discriminator.source_and_classes(fake)
        class_loss = self.class_loss(classes_real, y)
        if self.fake_class_loss:
            class_loss = class_loss + self.class_loss(classes_fake, y_fake)
        loss = self.objective.d_loss(source_real, source_fake) + self.aux_weight * class_loss
        return self.add_regularizers(loss, "d", real_in, fake)

    def generator_loss(self, real: Tensor, z: Tensor, fake: Tensor, y: Tensor | None = None,
                       y_fake: Tensor | None = None) -> Tensor:
        """-(w L_C) + G's side of L_S on the fakes (labels ``y_fake``) plus G's regularizers, D frozen."""
        with self.frozen_discriminator():
            source_fake, classes_fake = self.discriminator.source_and_classes(fake)
            real_out = self.discriminate(self.real_input(real)).detach() if self.objective.g_needs_real else None
            loss = self.objective.g_loss(source_fake, real_out) + self.aux_weight * self.class_loss(classes_fake, y_fake)
            return self.add_regularizers(loss, "g", z, fake)

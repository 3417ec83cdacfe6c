"""Relativistic average standard GAN, RaSGAN (Jolicoeur-Martineau 2019, Sec. 4.3 and Alg. 2).

With C the critic's raw output (logit) and the averages taken over the batch,

    D~(x_r) = sigmoid(C(x_r) - E_xf C(x_f)),     D~(x_f) = sigmoid(C(x_f) - E_xr C(x_r)),
    L_D = -E_xr log D~(x_r)       - E_xf log(1 - D~(x_f)),
    L_G = -E_xf log D~(x_f)       - E_xr log(1 - D~(x_r)).

L_G is L_D with real and fake swapped, so G's loss needs D's output on real data: the objective sets
``g_needs_real`` and the base loop passes D(real) of the iteration's last real batch to G's step.
Registering the objective also makes ``loss: rasgan`` available to every other variant (e.g. SNGAN).
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from repro.losses import Objective, register_objective
from repro.variants.base import GANModule

__all__ = ["RaSGAN", "rasgan_d_loss", "rasgan_g_loss"]


def rasgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_D: -E log sigmoid(C(x_r) - E C(x_f)) - E log(1 - sigmoid(C(x_f) - E C(x_r))), via
    -log sigmoid(y) = softplus(-y) and -log(1 - sigmoid(y)) = softplus(y)."""
    return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()


def rasgan_g_loss(fake: Tensor, real: Tensor) -> Tensor:
    """L_G: L_D with the roles of real and fake exchanged (gradient reaches G through both terms)."""
    return rasgan_d_loss(fake, real)


register_objective("rasgan", lambda: Objective(rasgan_d_loss, rasgan_g_loss, g_needs_real=True))


class RaSGAN(GANModule, name="rasgan"):
    """GANModule with the RaSGAN objective (Jolicoeur-Martineau 2019, Alg. 2: one D step per G step,
    Adam; any D, regularizer or normalization combines with it)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs: Any):
        super().__init__(generator, discriminator, loss="rasgan", **kwargs)

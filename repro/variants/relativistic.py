"""Relativistic GANs (Jolicoeur-Martineau 2019, Sec. 4): one objective family, variants by name.

With C the critic's raw output on real (C_r) and fake (C_f) samples, and for each loss a pair (f1, f2):
f1 the penalty when a sample that should look more real than the other side does not, f2 the mirror one,

    sgan  (RSGAN, RaSGAN):   f1(y) = -log sigmoid(y) = softplus(-y),   f2(y) = -log(1 - sigmoid(y)) = softplus(y)
    ls    (RaLSGAN):         f1(y) = (y - 1)^2,                        f2(y) = (y + 1)^2
    hinge (RaHingeGAN):      f1(y) = relu(1 - y),                      f2(y) = relu(1 + y)

- ``rsgan`` (eq. of Sec. 4.1, paired samples): L_D = E f1(C_r - C_f),  L_G = E f1(C_f - C_r).
- ``rasgan`` / ``ralsgan`` / ``rahinge`` (Sec. 4.3, Alg. 2), with r = C_r - mean C_f per real sample and
  q = C_f - mean C_r per fake sample:  L_D = 1/2 [E f1(r) + E f2(q)],  L_G = 1/2 [E f2(r) + E f1(q)]
  (the 1/2 is the authors' code's; the paper's equations omit it, Adam is blind to it).

``paper_era``: the code that produced the paper's RaSGAN / RaLSGAN numbers (``loss_D`` 12 and 15 of
AlexiaJM/RelativisticGAN, marked "incorrect used in paper" by its commit a15045f) used q' = mean C_f - C_r
(per real sample) in place of q; the README calls the results "comparable". RaHingeGAN was coded correctly
and RSGAN has no average, so the flag applies to ``rasgan`` and ``ralsgan`` only. Whether the later arXiv
versions reran those rows with the fixed code is not stated; the configs default to the correct form.

A gradient penalty (RSGAN-GP, RaSGAN-GP) is ``d_regularizers: [GradientPenalty]``. Every G loss here
compares fakes with real data, so each objective sets ``g_needs_real`` and the loop passes D's output on
the iteration's last real batch to G's step (the authors' code draws a fresh real batch for it).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from repro.losses import Objective, register_objective
from repro.variants.base import GANModule

__all__ = ["RelativisticGAN", "RaSGAN", "KINDS", "relativistic_objective"]

Penalty = Callable[[Tensor], Tensor]
_PAIRS: dict[str, tuple[Penalty, Penalty]] = {
    "sgan": (lambda y: F.softplus(-y), F.softplus),
    "ls": (lambda y: (y - 1).square(), lambda y: (y + 1).square()),
    "hinge": (lambda y: F.relu(1 - y), lambda y: F.relu(1 + y)),
}
KINDS: dict[str, str] = {"rsgan": "sgan", "rasgan": "sgan", "ralsgan": "ls", "rahinge": "hinge"}
_PAPER_ERA = ("rasgan", "ralsgan")


def _paired(real: Tensor, fake: Tensor) -> Tensor:
    if real.shape != fake.shape:
        raise ValueError(f"RSGAN pairs real and fake samples one to one, but got {len(real)} real and {len(fake)} "
                         "fake outputs; set model.g_batch_size: null (G's batch = the real batch)")
    return real - fake


def rsgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E f1(C_r - C_f), f1 = softplus(-y)."""
    return F.softplus(-_paired(real, fake)).mean()


def rsgan_g_loss(fake: Tensor, real: Tensor) -> Tensor:
    """E f1(C_f - C_r)."""
    return F.softplus(_paired(real, fake)).mean()


def _relative(real: Tensor, fake: Tensor, paper_era: bool) -> tuple[Tensor, Tensor]:
    """(r, q): r = C_r - mean C_f; q = C_f - mean C_r, or the paper-era mean C_f - C_r."""
    return real - fake.mean(), (fake.mean() - real) if paper_era else (fake - real.mean())


def ra_d_loss(real: Tensor, fake: Tensor, loss: str, paper_era: bool = False) -> Tensor:
    """1/2 [E f1(r) + E f2(q)]."""
    f1, f2 = _PAIRS[loss]
    r, q = _relative(real, fake, paper_era)
    return 0.5 * (f1(r).mean() + f2(q).mean())


def ra_g_loss(fake: Tensor, real: Tensor, loss: str, paper_era: bool = False) -> Tensor:
    """1/2 [E f2(r) + E f1(q)]: L_D with the roles of real and fake exchanged."""
    f1, f2 = _PAIRS[loss]
    r, q = _relative(real, fake, paper_era)
    return 0.5 * (f2(r).mean() + f1(q).mean())


def relativistic_objective(kind: str, paper_era: bool | float = False) -> Objective:
    """The (L_D, L_G) pair of ``kind`` (one of ``KINDS``); ``paper_era`` as in the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"unknown relativistic loss {kind!r}; valid: {', '.join(KINDS)}")
    if paper_era and kind not in _PAPER_ERA:
        raise ValueError(f"paper_era applies to {' and '.join(_PAPER_ERA)} only (the authors coded {kind} correctly "
                         "from the start); remove it")
    if kind == "rsgan":
        return Objective(rsgan_d_loss, rsgan_g_loss, g_needs_real=True)
    pair = {"loss": KINDS[kind], "paper_era": bool(paper_era)}
    return Objective(partial(ra_d_loss, **pair), partial(ra_g_loss, **pair), g_needs_real=True)


for _kind in KINDS:  # ``loss: rsgan`` etc. for every variant; ``loss_args: {paper_era: 1}`` where it applies
    register_objective(_kind, partial(relativistic_objective, _kind))


class RelativisticGAN(GANModule, name="relativistic"):
    """GANModule with a relativistic objective (Jolicoeur-Martineau 2019, Alg. 1-2; any D, regularizer or
    normalization combines with it).

    Args:
        kind: ``rsgan``, ``rasgan``, ``ralsgan`` or ``rahinge``.
        paper_era: the paper's code's fake term mean C_f - C_r (``rasgan`` / ``ralsgan`` only).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 kind: Literal["rsgan", "rasgan", "ralsgan", "rahinge"] = "rasgan", paper_era: bool = False,
                 **kwargs: Any):
        if kind not in KINDS:
            raise ValueError(f"model.kind {kind!r} is not a relativistic loss; valid: {', '.join(KINDS)}")
        args = {"paper_era": paper_era} if paper_era else {}
        super().__init__(generator, discriminator, loss=kind, loss_args=args, **kwargs)


class RaSGAN(RelativisticGAN, name="rasgan"):
    """The relativistic average standard GAN (``RelativisticGAN`` with ``kind: rasgan``)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, paper_era: bool = False, **kwargs: Any):
        super().__init__(generator, discriminator, kind="rasgan", paper_era=paper_era, **kwargs)

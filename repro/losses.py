"""GAN objectives as pure functions of discriminator outputs.

Every objective is a pair: ``d_loss(real_out, fake_out)`` minimized by D and ``g_loss(fake_out)``
minimized by G, where ``*_out`` are raw discriminator outputs (logits for the probabilistic losses).
An objective whose G loss compares fakes with real data (relativistic losses) sets ``g_needs_real``;
the training loop then also passes D's output on the real batch: ``g_loss(fake_out, real_out)``.
Networks know nothing of losses; this module knows nothing of networks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Objective", "OBJECTIVES", "objective", "register_objective"]


# Goodfellow et al. 2014, eq. 1: max_D E log D(x) + E log(1 - D(G(z))), with D = sigmoid(logit).
# One-sided label smoothing (Salimans et al. 2016, Sec. 3.4): the real target 1 becomes alpha, fakes keep 0.
def minimax_d_loss(real: Tensor, fake: Tensor, real_label: float = 1.0) -> Tensor:
    """BCE(D(x), real_label) + BCE(D(G(z)), 0) on logits: real_label = 1 is -E[log sigmoid(D(x))] -
    E[log(1 - sigmoid(D(G(z))))]; real_label = alpha is alpha * softplus(-D(x)) + (1 - alpha) * softplus(D(x))."""
    real_term = F.softplus(-real)
    if real_label != 1.0:
        real_term = real_label * real_term + (1.0 - real_label) * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


# Goodfellow et al. 2014, eq. 1: min_G E log(1 - D(G(z))) (saturating).
def minimax_g_loss(fake: Tensor) -> Tensor:
    """E[log(1 - sigmoid(D(G(z))))] = -E[softplus(D(G(z)))]."""
    return -F.softplus(fake).mean()


# Goodfellow et al. 2014, Sec. 3: G maximizes log D(G(z)) instead ("non-saturating").
def nonsaturating_g_loss(fake: Tensor) -> Tensor:
    """-E[log sigmoid(D(G(z)))]."""
    return F.softplus(-fake).mean()


# Mao et al. 2017, eq. 2: min_D 1/2 E(D(x)-b)^2 + 1/2 E(D(G(z))-a)^2.
def least_squares_d_loss(real: Tensor, fake: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Least-squares D loss with fake label a and real label b."""
    return 0.5 * (real - b).square().mean() + 0.5 * (fake - a).square().mean()


# Mao et al. 2017, eq. 2: min_G 1/2 E(D(G(z))-c)^2.
def least_squares_g_loss(fake: Tensor, c: float = 1.0) -> Tensor:
    """Least-squares G loss with target c."""
    return 0.5 * (fake - c).square().mean()


# Arjovsky et al. 2017, eq. 3 (critic maximizes E f(x) - E f(G(z))).
def wasserstein_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[f(G(z))] - E[f(x)]."""
    return fake.mean() - real.mean()


# Arjovsky et al. 2017, Alg. 1 (generator minimizes -E f(G(z))); also Miyato et al. 2018, eq. 17 (hinge G).
def wasserstein_g_loss(fake: Tensor) -> Tensor:
    """-E[f(G(z))]."""
    return -fake.mean()


# Miyato et al. 2018, eq. 16 / Lim & Ye 2017: V_D = E min(0, -1 + D(x)) + E min(0, -1 - D(G(z))).
def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


# Wu et al. 2021 (GN-GAN), CNN setting: BCE on a bounded output D^ in [-1, 1], read as the
# probability (D^ + 1) / 2 rather than as a logit (F.binary_cross_entropy clamps log at -100).
def _bounded_to_probability(out: Tensor) -> Tensor:
    return out.add(1.0).mul(0.5).clamp(0.0, 1.0)


def bounded_bce_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """-E[log p(x)] - E[log(1 - p(G(z)))], p = (D^ + 1) / 2."""
    p_real, p_fake = _bounded_to_probability(real), _bounded_to_probability(fake)
    return F.binary_cross_entropy(p_real, torch.ones_like(p_real)) + F.binary_cross_entropy(
        p_fake, torch.zeros_like(p_fake)
    )


def bounded_bce_g_loss(fake: Tensor) -> Tensor:
    """Non-saturating: -E[log p(G(z))], p = (D^ + 1) / 2."""
    p_fake = _bounded_to_probability(fake)
    return F.binary_cross_entropy(p_fake, torch.ones_like(p_fake))


@dataclass(frozen=True)
class Objective:
    """A (d_loss, G loss) pair; ``generator`` takes ``(fake_out, real_out)`` when ``g_needs_real``, else ``(fake_out)``."""

    d_loss: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[..., Tensor]
    g_needs_real: bool = False

    def g_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        """G's loss; ``real_out`` (D's output on real data) is required exactly when ``g_needs_real``."""
        if not self.g_needs_real:
            return self.generator(fake_out)
        if real_out is None:
            raise ValueError("this objective's generator loss compares fakes with real data: pass real_out")
        return self.generator(fake_out, real_out)


def _least_squares(a: float = 0.0, b: float = 1.0, c: float = 1.0) -> Objective:
    # Mao et al. 2017, eq. 9 defaults (a=0, b=1, c=1); eq. 8 is a=-1, b=1, c=0.
    return Objective(partial(least_squares_d_loss, a=a, b=b), partial(least_squares_g_loss, c=c))


def _bce(g_loss: Callable[[Tensor], Tensor]) -> Callable[..., Objective]:
    """The logistic D loss with ``real_label`` (one-sided label smoothing: Salimans et al. 2016 use 0.9, their
    ImageNet code 0.75; 1 is no smoothing) paired with ``g_loss``."""

    def make(real_label: float = 1.0) -> Objective:
        if not 0.0 < real_label <= 1.0:
            raise ValueError(f"loss_args.real_label (one-sided label smoothing) must be in (0, 1], got {real_label}")
        return Objective(partial(minimax_d_loss, real_label=real_label), g_loss)

    return make


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "minimax": _bce(minimax_g_loss),
    "nonsaturating": _bce(nonsaturating_g_loss),
    "least_squares": _least_squares,
    "wasserstein": lambda: Objective(wasserstein_d_loss, wasserstein_g_loss),
    "hinge": lambda: Objective(hinge_d_loss, wasserstein_g_loss),
    "bounded_bce": lambda: Objective(bounded_bce_d_loss, bounded_bce_g_loss),
}


def register_objective(name: str, factory: Callable[..., Objective]) -> None:
    """Make ``loss: <name>`` valid for every variant (a variant file may register the objective it defines)."""
    if name in OBJECTIVES and OBJECTIVES[name] is not factory:
        raise ValueError(f"an objective named {name!r} is already registered")
    OBJECTIVES[name] = factory


def objective(name: str, **kwargs: float) -> Objective:
    """Look up an objective by name; ``kwargs`` go to parametrized ones (least_squares: a, b, c)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(OBJECTIVES))}")
    try:
        return OBJECTIVES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"loss {name!r} does not take arguments {sorted(kwargs)}") from err

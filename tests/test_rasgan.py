"""RaSGAN (Jolicoeur-Martineau 2019, Sec. 4.3): the losses against a hand computation, and the G-step
hook that gives G's loss D's output on real data only when the objective asks for it."""
from __future__ import annotations

import math

import pytest
import torch

from repro.losses import objective
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import NSGAN, SNGAN, RaSGAN, VARIANTS

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.0, 1.5]


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def hand_losses(real: list[float], fake: list[float]) -> tuple[float, float]:
    """L_D and L_G of RaSGAN written out term by term (with the authors' code's 1/2; the family's other
    members: tests/test_relativistic.py)."""
    mr, mf = mean(real), mean(fake)
    d = -mean([math.log(sig(r - mf)) for r in real]) - mean([math.log(1 - sig(f - mr)) for f in fake])
    g = -mean([math.log(sig(f - mr)) for f in fake]) - mean([math.log(1 - sig(r - mf)) for r in real])
    return d / 2, g / 2


def test_rasgan_losses_match_hand_computation():
    o = objective("rasgan")
    d, g = hand_losses(REAL, FAKE)
    assert o.g_needs_real
    assert o.d_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(d, rel=1e-6)
    assert o.g_loss(torch.tensor(FAKE), torch.tensor(REAL)).item() == pytest.approx(g, rel=1e-6)
    with pytest.raises(ValueError, match="real_out"):
        o.g_loss(torch.tensor(FAKE))


def test_rasgan_generator_gradient_reaches_both_terms():
    """dL_G/dC(x_f) by autograd equals central differences of the hand formula (the real term depends
    on the fakes through E C(x_f), so a G loss of the fake term alone would differ)."""
    fake = torch.tensor(FAKE, dtype=torch.float64, requires_grad=True)
    objective("rasgan").g_loss(fake, torch.tensor(REAL, dtype=torch.float64)).backward()
    h = 1e-6
    for j in range(len(FAKE)):
        up, down = list(FAKE), list(FAKE)
        up[j] += h
        down[j] -= h
        numeric = (hand_losses(REAL, up)[1] - hand_losses(REAL, down)[1]) / (2 * h)
        assert fake.grad[j].item() == pytest.approx(numeric, rel=1e-6)


class CountingD(torch.nn.Module):
    """Wraps D and counts its forward passes."""

    def __init__(self, d: torch.nn.Module):
        super().__init__()
        self.d, self.calls = d, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.d(x)


@pytest.mark.parametrize("cls,d_calls", [(NSGAN, 1), (RaSGAN, 2)])
def test_g_step_computes_d_real_only_when_asked(cls, d_calls):
    torch.manual_seed(0)
    d = CountingD(MLPDiscriminator(width=8, depth=1))
    model = cls(MLPGenerator(width=8, depth=1), d)
    model._lean_steps = True  # plain backward / step: no trainer needed
    opt = torch.optim.SGD(model.generator.parameters(), lr=0.1)
    d_before = [p.clone() for p in d.parameters()]
    model.g_step(torch.randn(16, 2), opt)
    assert d.calls == d_calls
    assert all(torch.equal(a, b) and p.grad is None for a, b, p in zip(d_before, d.parameters(), d.parameters()))
    assert all(p.requires_grad for p in d.parameters())  # frozen only during G's step


def test_rasgan_is_registered_and_its_loss_composes():
    assert VARIANTS["rasgan"] is RaSGAN
    model = SNGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), loss="rasgan")
    assert model.objective.g_needs_real

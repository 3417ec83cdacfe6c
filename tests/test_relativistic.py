"""Relativistic GANs (Jolicoeur-Martineau 2019): every member of the family against a term-by-term hand
computation, the paper-era fake term, RSGAN's pairing, and composition with other variants."""
from __future__ import annotations

import math

import pytest
import torch

from repro.losses import objective
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import SNGAN, VARIANTS, RelativisticGAN

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.0, 1.5]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def softplus(y: float) -> float:
    return math.log1p(math.exp(y))


F1 = {"sgan": lambda y: softplus(-y), "ls": lambda y: (y - 1) ** 2, "hinge": lambda y: max(0.0, 1 - y)}
F2 = {"sgan": softplus, "ls": lambda y: (y + 1) ** 2, "hinge": lambda y: max(0.0, 1 + y)}
PAIR = {"rasgan": "sgan", "ralsgan": "ls", "rahinge": "hinge"}


def hand(kind: str, real: list[float], fake: list[float], paper_era: bool = False) -> tuple[float, float]:
    """(L_D, L_G) written out per sample, as the issue states them."""
    if kind == "rsgan":  # BCE(C_r - C_f, 1) and BCE(C_f - C_r, 1), paired
        return (mean([softplus(-(r - f)) for r, f in zip(real, fake)]),
                mean([softplus(-(f - r)) for r, f in zip(real, fake)]))
    f1, f2 = F1[PAIR[kind]], F2[PAIR[kind]]
    mr, mf = mean(real), mean(fake)
    rel_real = [r - mf for r in real]
    rel_fake = [mf - r for r in real] if paper_era else [f - mr for f in fake]
    d = 0.5 * (mean([f1(y) for y in rel_real]) + mean([f2(y) for y in rel_fake]))
    g = 0.5 * (mean([f2(y) for y in rel_real]) + mean([f1(y) for y in rel_fake]))
    return d, g


CASES = [("rsgan", False), ("rasgan", False), ("ralsgan", False), ("rahinge", False), ("rasgan", True),
         ("ralsgan", True)]


@pytest.mark.parametrize("kind, paper_era", CASES)
def test_losses_match_hand_computation(kind, paper_era):
    o = objective(kind, **({"paper_era": 1.0} if paper_era else {}))
    d, g = hand(kind, REAL, FAKE, paper_era)
    assert o.g_needs_real
    assert o.d_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(d, rel=1e-6)
    assert o.g_loss(torch.tensor(FAKE), torch.tensor(REAL)).item() == pytest.approx(g, rel=1e-6)


def test_issue_formulas_spot_values():
    """RaLSGAN at C_r = 1 + mean C_f, C_f = mean C_r - 1 (D's targets met) has L_D = 0 and L_G = 4."""
    real = torch.tensor([1.0, 1.0])
    fake = torch.tensor([0.0, 0.0])
    o = objective("ralsgan")
    assert o.d_loss(real, fake).item() == 0.0 and o.g_loss(fake, real).item() == pytest.approx(4.0)
    # the paper-era RaLSGAN D loss counts the real term twice: (mean C_f - C_r + 1)^2 = (C_r - mean C_f - 1)^2
    r, f = torch.tensor(REAL), torch.tensor(FAKE)
    assert objective("ralsgan", paper_era=1.0).d_loss(r, f).item() == pytest.approx(
        mean([(x - mean(FAKE) - 1) ** 2 for x in REAL]), rel=1e-6)


@pytest.mark.parametrize("kind", ["rasgan", "ralsgan", "rahinge", "rsgan"])
def test_generator_gradient_matches_finite_differences(kind):
    """dL_G/dC_f by autograd equals central differences of the hand formula (through both terms; inputs
    chosen away from the hinge's kinks)."""
    real_in, fake_in = [2.0, -1.0, 0.3], [-3.0, 0.1, 1.6]
    fake = torch.tensor(fake_in, dtype=torch.float64, requires_grad=True)
    objective(kind).g_loss(fake, torch.tensor(real_in, dtype=torch.float64)).backward()
    h = 1e-6
    for j in range(len(fake_in)):
        up, down = list(fake_in), list(fake_in)
        up[j] += h
        down[j] -= h
        numeric = (hand(kind, real_in, up)[1] - hand(kind, real_in, down)[1]) / (2 * h)
        assert fake.grad[j].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_paper_era_only_where_it_existed_and_rsgan_pairs():
    for kind in ("rahinge", "rsgan"):
        with pytest.raises(ValueError, match="paper_era"):
            objective(kind, paper_era=1.0)
    with pytest.raises(ValueError, match="g_batch_size"):
        objective("rsgan").d_loss(torch.zeros(4), torch.zeros(3))


def test_family_is_registered_and_composes():
    assert VARIANTS["relativistic"] is RelativisticGAN
    g, d = MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1)
    model = SNGAN(g, d, loss="rahinge")  # any variant takes a relativistic loss by name
    assert model.objective.g_needs_real
    model = RelativisticGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), kind="ralsgan",
                            paper_era=True)
    r, f = torch.tensor(REAL), torch.tensor(FAKE)
    assert model.objective.d_loss(r, f).item() == pytest.approx(hand("ralsgan", REAL, FAKE, True)[0], rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        RelativisticGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), kind="rgan")

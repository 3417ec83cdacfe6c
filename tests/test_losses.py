"""Each objective equals its formula on hand-made inputs."""
import math

import pytest
import torch

from repro.losses import objective

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(xs):
    return sum(xs) / len(xs)


def test_minimax():
    o = objective("minimax")
    d = -mean([math.log(sig(r)) for r in REAL.tolist()]) - mean([math.log(1 - sig(f)) for f in FAKE.tolist()])
    g = mean([math.log(1 - sig(f)) for f in FAKE.tolist()])
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert o.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_nonsaturating():
    o = objective("nonsaturating")
    g = -mean([math.log(sig(f)) for f in FAKE.tolist()])
    assert o.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(objective("minimax").d_loss(REAL, FAKE).item())


@pytest.mark.parametrize("a,b,c", [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0)])
def test_least_squares(a, b, c):
    o = objective("least_squares", a=a, b=b, c=c)
    d = 0.5 * mean([(r - b) ** 2 for r in REAL.tolist()]) + 0.5 * mean([(f - a) ** 2 for f in FAKE.tolist()])
    g = 0.5 * mean([(f - c) ** 2 for f in FAKE.tolist()])
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert o.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_wasserstein():
    o = objective("wasserstein")
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(mean(FAKE.tolist()) - mean(REAL.tolist()))
    assert o.g_loss(FAKE).item() == pytest.approx(-mean(FAKE.tolist()))


def test_hinge():
    o = objective("hinge")
    d = mean([max(0, 1 - r) for r in REAL.tolist()]) + mean([max(0, 1 + f) for f in FAKE.tolist()])
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(d)
    assert o.g_loss(FAKE).item() == pytest.approx(-mean(FAKE.tolist()))


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="hinge"):
        objective("nope")

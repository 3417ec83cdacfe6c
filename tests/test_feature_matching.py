"""Feature matching (Salimans et al. 2016, Sec. 3.1): the distances on hand-made features, G's loss through
D's last hidden layer or a named layer, with D frozen."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.nets import MLPDiscriminator, MLPGenerator
from repro.nets.base import Discriminator
from repro.variants import FeatureMatchingGAN
from repro.variants.feature_matching import feature_distance


class IdentityFeatures(Discriminator):
    """f(x) = (x, 2x): features known by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.set_body(nn.Sequential(nn.Identity()), 2, "none")
        self.scale = nn.Parameter(torch.ones(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 2 * x], dim=1) * self.scale


def test_distances_by_hand():
    real = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # mean (2, 1)
    fake = torch.tensor([[0.0, 0.0], [1.0, 4.0]])  # mean (0.5, 2): difference (1.5, -1)
    assert feature_distance(real, fake, "l2_squared").item() == pytest.approx(1.5**2 + 1)
    assert feature_distance(real, fake, "mean_squared").item() == pytest.approx((1.5**2 + 1) / 2)
    assert feature_distance(real, fake, "mean_absolute").item() == pytest.approx((1.5 + 1) / 2)


def test_generator_loss_matches_the_mean_features_and_leaves_d_alone():
    torch.manual_seed(0)
    model = FeatureMatchingGAN(MLPGenerator(width=8, depth=1), IdentityFeatures())
    real, z = torch.randn(6, 2), torch.randn(4, 2)
    fake = model.generator(z)
    loss = model.generator_loss(real, z, fake)
    diff = torch.cat([real, 2 * real], 1).mean(0) - torch.cat([fake, 2 * fake], 1).mean(0)
    assert loss.item() == pytest.approx(diff.square().sum().item(), rel=1e-6)
    loss.backward()
    assert model.discriminator.scale.grad is None  # D frozen in G's step, real features are constants
    assert all(p.grad is not None for p in model.generator.parameters() if p.requires_grad)
    assert model.discriminator.scale.requires_grad


def test_named_layer_and_bad_options():
    torch.manual_seed(0)
    d = MLPDiscriminator(width=8, depth=2)
    model = FeatureMatchingGAN(MLPGenerator(width=8, depth=1), d, layer="body.0", distance="mean_absolute")
    x = torch.randn(5, 2)
    assert torch.equal(model.matched_features(x), d.body[0](x))  # the first linear layer's output
    real, z = torch.randn(5, 2), torch.randn(5, 2)
    fake = model.generator(z)
    expect = (d.body[0](real).mean(0) - d.body[0](fake).mean(0)).abs().mean()
    assert model.generator_loss(real, z, fake).item() == pytest.approx(expect.item(), rel=1e-6)
    with pytest.raises(ValueError, match="not a submodule"):
        FeatureMatchingGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), layer="body.9")
    with pytest.raises(ValueError, match="distance"):
        FeatureMatchingGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), distance="l1")

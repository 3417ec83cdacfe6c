"""EMA of G: averaged weights, and batch-norm statistics that belong to the averaged weights."""
import pytest
import torch
from torch import nn

from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import NSGAN


def make_model(**options) -> NSGAN:
    torch.manual_seed(0)
    return NSGAN(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2), ema_decay=0.9, **options)


def test_update_ema_is_lerp_of_parameters():
    model = make_model()
    old = [p.clone() for p in model.generator_ema.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema()
    for p_ema, p_old, p in zip(model.generator_ema.parameters(), old, model.generator.parameters()):
        assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p)


@pytest.mark.parametrize("batches", [None, 3])  # the default (BigGAN-PyTorch's 16) and model.ema_standing_batches
def test_ema_samples_use_statistics_of_the_ema_weights(batches: int | None):
    model = make_model() if batches is None else make_model(ema_standing_batches=batches)
    with torch.no_grad():  # make the averaged weights differ a lot from G's
        for p in model.generator.parameters():
            p.mul_(3.0).add_(0.5)
    model.update_ema()  # copies G's (wrong) BN statistics into the EMA net
    model.sample(8)
    ema = model.generator_ema
    bn = next(m for m in ema.modules() if isinstance(m, nn.BatchNorm1d))
    first_linear = ema.net[0]
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(256, ema.z_dim, generator=gen) for _ in range(batches or 16)])
    pre = first_linear(z)
    assert torch.allclose(bn.running_mean, pre.mean(0), atol=1e-4)
    assert not torch.allclose(bn.running_mean, model.generator.net[1].running_mean, atol=1e-2)
    # statistics are re-estimated once per EMA update, not at every sample call
    before = bn.running_mean.clone()
    model.sample(8)
    assert torch.equal(before, bn.running_mean)

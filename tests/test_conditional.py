"""Class conditioning: conditional BN, the projection discriminator, AC-GAN, labelled data and sampling."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.nets.conditional_bn import (
    ClassConditionalBatchNorm1d,
    ClassConditionalBatchNorm2d,
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    ConditionalSequential,
)


def _standardized(x: torch.Tensor) -> torch.Tensor:
    """Batch standardization per channel, written out (biased variance, eps 1e-5)."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("cls,shape", [(ClassConditionalBatchNorm2d, (6, 3, 4, 4)),
                                       (ClassConditionalBatchNorm1d, (6, 3))])
def test_class_conditional_bn_uses_the_class_gamma_beta(cls: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    bn = cls(3, num_classes=4)
    x = torch.randn(*shape) * 2 + 1
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    assert torch.allclose(bn(x, y), _standardized(x), atol=1e-5)  # gamma 1, beta 0 at initialization
    gamma = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    beta = torch.tensor([[0.0, 1.0, -1.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 3.0, 0.5]])
    with torch.no_grad():
        bn.gain.weight.copy_(gamma - 1)
        bn.bias.weight.copy_(beta)
    view = (6, 3) + (1,) * (len(shape) - 2)
    expected = _standardized(x) * gamma[y].view(view) + beta[y].view(view)
    assert torch.allclose(bn(x, y), expected, atol=1e-5)
    with pytest.raises(ValueError, match="integer labels"):
        bn(x, torch.randn(6, 4))


@pytest.mark.parametrize("cls,shape", [(ConditionalBatchNorm2d, (5, 3, 2, 2)), (ConditionalBatchNorm1d, (5, 3))])
def test_conditional_bn_from_a_vector(cls: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    bn = cls(3, cond_dim=2)
    x, c = torch.randn(*shape), torch.randn(5, 2)
    wg, wb = bn.gain.weight.detach(), bn.bias.weight.detach()
    view = (5, 3) + (1,) * (len(shape) - 2)
    expected = _standardized(x) * (1 + c @ wg.T).view(view) + (c @ wb.T).view(view)
    assert torch.allclose(bn(x, c), expected, atol=1e-5)
    with pytest.raises(ValueError, match="4 conditioning inputs"):
        bn(x, c[:4])


def test_conditional_sequential_hands_labels_to_conditional_layers_only() -> None:
    seq = ConditionalSequential(nn.Linear(2, 3), ClassConditionalBatchNorm1d(3, 2), nn.ReLU())
    out = seq(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))
    assert out.shape == (4, 3) and (out >= 0).all()

"""How far "normalized" is from 1-Lipschitz: per conv layer, sigma of the reshaped kernel vs the conv's operator norm.

Spectral normalization (Miyato et al. 2018, Alg. 1) bounds sigma(W) of the kernel reshaped to
(out, in*kh*kw). The convolution as a linear map on its actual input (C, H, W) has a different spectral
norm: up to sqrt(kh*kw) * sigma(W) for stride 1 (Tsuzuku et al. 2018), often less with stride 2, so a
spectrally normalized conv is not exactly 1-Lipschitz. ``conv_operator_norms`` reports both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvNorms", "conv_operator_norms", "conv_operator_norm", "conv_adjoint"]


@dataclass(frozen=True)
class ConvNorms:
    """One conv layer's numbers: sigma of the reshaped kernel and the operator norm on ``input_shape``."""

    name: str
    input_shape: tuple[int, ...]
    kernel_sigma: float
    operator_norm: float


def conv_adjoint(conv: nn.Conv2d, y: Tensor, input_hw: tuple[int, int]) -> Tensor:
    """The transpose of ``x -> conv(x)`` (no bias) applied to ``y``, as a transposed convolution whose
    output padding restores the input size ``input_hw`` lost to the stride's floor."""
    w = conv.weight
    out_pad = [
        size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for size, o, s, p, d, k in zip(input_hw, y.shape[-2:], conv.stride, conv.padding, conv.dilation, w.shape[-2:])
    ]
    return F.conv_transpose2d(y, w, None, conv.stride, conv.padding, tuple(out_pad), conv.groups, conv.dilation)


def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


@torch.no_grad()
def conv_operator_norm(conv: nn.Conv2d, input_shape: tuple[int, int, int], iters: int = 200, seed: int = 0) -> float:
    """Spectral norm of the (bias-free) convolution on inputs of shape (C, H, W): power iteration on A^T A
    with A = the conv and A^T = ``conv_adjoint``."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(
            f"conv_operator_norm needs zero padding given as numbers, got {conv.padding!r} / {conv.padding_mode!r}"
        )
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(seed)).to(conv.weight)
    x = x / x.norm()
    for _ in range(iters):
        x = conv_adjoint(conv, _conv(conv, x), input_shape[-2:])
        x = x / x.norm()
    return float(_conv(conv, x).norm())


@torch.no_grad()
def conv_operator_norms(module: nn.Module, example: Tensor, iters: int = 200) -> list[ConvNorms]:
    """For every ``nn.Conv2d`` in ``module`` (weights as the forward uses them, i.e. after spectral or
    weight norm), sigma of the reshaped kernel and the operator norm on the input size it sees for
    ``example`` (one forward pass in eval mode records the sizes; no power-iteration state changes)."""
    shapes: dict[str, tuple[int, ...]] = {}
    convs = {name: m for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}

    def record(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in convs.items()]
    was_training = module.training
    module.eval()
    try:
        module(example[:1])
        return [
            ConvNorms(
                name,
                shapes[name],
                float(torch.linalg.matrix_norm(conv.weight.flatten(1), 2)),
                conv_operator_norm(conv, shapes[name][:3], iters),
            )
            for name, conv in convs.items()
            if name in shapes
        ]
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)

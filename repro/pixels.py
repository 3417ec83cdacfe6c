"""The one map between stored pixels and model space: uint8 0..255 <-> floats in [-1, 1].

Data batches, metric extractors and sample grids all convert through this pair, so a real image
and a generated one reach every consumer by the same arithmetic.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_float", "to_uint8"]


def to_float(pixels: Tensor) -> Tensor:
    """Pixels on the 0..255 scale (uint8, or floats such as a resized batch) -> x / 127.5 - 1 (float32 for uint8)."""
    return pixels.div(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """Model-space images in [-1, 1] -> uint8 by (x + 1) * 127.5, rounded and clamped to 0..255
    (the inverse of ``to_float`` on its 256 values)."""
    return x.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)

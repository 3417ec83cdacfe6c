"""Latent draws: the truncation trick's truncated normal (Brock et al. 2019, BigGAN, Sec. 3.1)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["truncated_normal", "truncation_suffix", "check_truncation"]


def check_truncation(threshold: float) -> None:
    """A truncation threshold must be > 0 (a value of N(0, 1) is kept when |z| <= threshold)."""
    if not threshold > 0:
        raise ValueError(f"a truncation threshold must be > 0, got {threshold}")


def truncated_normal(shape: tuple[int, ...], threshold: float, device: torch.device | str | None = None,
                     generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """N(0, 1) values with every |z| <= ``threshold``: values that fall outside are drawn again until none does
    (BigGAN Sec. 3.1: "values which fall outside the range are resampled to fall inside that range").

    The result is distributed as the standard normal truncated to [-threshold, threshold]. Thresholds far below
    1 need many redraws (acceptance rate P(|z| <= t)); the loop ends when every entry is inside. ``dtype``
    defaults to torch's default dtype.
    """
    check_truncation(threshold)
    z = torch.randn(shape, device=device, generator=generator, dtype=dtype)
    outside = z.abs() > threshold
    while bool(outside.any()):
        z[outside] = torch.randn(int(outside.sum()), device=z.device, generator=generator, dtype=z.dtype)
        outside = z.abs() > threshold
    return z


def truncation_suffix(threshold: float) -> str:
    """The metric-key suffix of samples drawn at a truncation threshold: ``_trunc0.5`` (``format(t, 'g')``)."""
    return f"_trunc{threshold:g}"

"""What wraps or follows discriminator layers: the per-layer normalization options.

``wrap(layer, norm)`` re-parametrizes a weight layer; ``feature_norm(norm, channels)`` is the module
placed after a hidden layer. Networks call only these two, so a new option is added here alone.
"""
from __future__ import annotations

from torch import nn

__all__ = ["NORMS", "wrap", "feature_norm", "check_norm"]

NORMS: tuple[str, ...] = ("none",)


def check_norm(norm: str) -> str:
    """Return ``norm`` or raise one clear error listing the valid options."""
    if norm not in NORMS:
        raise ValueError(f"unknown normalization {norm!r}; valid: {', '.join(NORMS)}")
    return norm


def wrap(layer: nn.Module, norm: str) -> nn.Module:
    """The weight layer, re-parametrized as ``norm`` asks."""
    check_norm(norm)
    return layer


def feature_norm(norm: str, channels: int) -> nn.Module:
    """The module that follows a hidden layer of ``channels`` features."""
    check_norm(norm)
    return nn.Identity()

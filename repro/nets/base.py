"""What every discriminator shares: a feature body and a linear head to one output per sample."""
from __future__ import annotations

from torch import Tensor, nn

from repro.normalization import wrap

__all__ = ["Discriminator"]


class Discriminator(nn.Module):
    """``features(x)`` is D's last hidden layer (flattened), ``head`` maps it to one output per sample.

    RFGAN concatenates other features before a new head, and the diagnostics read both parts, so
    every D exposes this split. Subclasses build their layers and call ``set_body``.
    """

    body: nn.Module
    head: nn.Module
    feature_dim: int

    def set_body(self, body: nn.Module, feature_dim: int, norm: str) -> None:
        """Install the feature ``body`` (output width ``feature_dim``) and a linear head wrapped by ``norm``."""
        self.body, self.feature_dim = body, feature_dim
        self.head = wrap(nn.Linear(feature_dim, 1), norm)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)

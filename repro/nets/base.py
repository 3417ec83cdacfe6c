"""What every discriminator shares (a feature body and a linear head to one output per sample), and
the check that a generator / discriminator pair fits the data's sample shape."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from repro.normalization import wrap

__all__ = ["Discriminator", "check_shapes"]


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


@torch.no_grad()
def check_shapes(generator: nn.Module, discriminator: nn.Module, sample_shape: tuple[int, ...],
                 device: torch.device, g_classes: int | None = None, d_classes: int | None = None) -> None:
    """Raise one clear ``ValueError`` if G's samples or D's inputs do not have the data's ``sample_shape``.

    Runs G and D once on two inputs in eval mode (no state changes: no BN statistics or SN
    power-iteration updates); G / D get labels (class 0) too when ``g_classes`` / ``d_classes`` is set."""
    def labels(num_classes: int | None) -> tuple[Tensor, ...]:
        return () if num_classes is None else (torch.zeros(2, dtype=torch.long, device=device),)

    nets = (generator, discriminator)
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        try:
            fake = generator(torch.zeros(2, generator.z_dim, device=device), *labels(g_classes))
        except RuntimeError as err:
            raise ValueError(f"model.generator fails on a batch of latents (z_dim {generator.z_dim}): {err}") from None
        if tuple(fake.shape[1:]) != tuple(sample_shape):
            raise ValueError(
                f"model.generator makes samples of shape {tuple(fake.shape[1:])} but data samples have shape "
                f"{tuple(sample_shape)}; set the generator's image_size / channels / out_dim to match "
                "data.dataset and data.image_size"
            )
        try:
            discriminator(torch.zeros(2, *sample_shape, device=device), *labels(d_classes))
        except RuntimeError as err:
            raise ValueError(
                f"model.discriminator cannot take data samples of shape {tuple(sample_shape)}; set its "
                f"image_size / channels / in_dim to match data.dataset and data.image_size ({err})"
            ) from None
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)

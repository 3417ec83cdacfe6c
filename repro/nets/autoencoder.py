"""Autoencoders whose frozen encoder gives RFGAN's representative features h1 (Bang & Shim 2018, Sec. 3).

Each exposes ``encoder`` (x -> code of ``code_dim``), ``decoder`` and ``config`` (its class and
constructor arguments: part of the key under which pre-trained weights are cached).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from repro.nets.cnn import up_stages

__all__ = ["MLPAutoencoder", "ConvAutoencoder"]


class _Autoencoder(nn.Module):
    encoder: nn.Module
    decoder: nn.Module
    code_dim: int
    config: dict[str, Any]

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class MLPAutoencoder(_Autoencoder):
    """Flat data: ``depth`` ReLU layers of ``width`` down to ``code_dim``, mirrored back up."""

    def __init__(self, in_dim: int = 2, width: int = 64, depth: int = 2, code_dim: int = 8):
        super().__init__()
        if min(in_dim, width, depth, code_dim) < 1:
            raise ValueError(
                f"MLPAutoencoder sizes must be >= 1, got in_dim={in_dim}, width={width}, depth={depth}, code_dim={code_dim}"
            )
        self.code_dim = code_dim
        self.config = {
            "class": type(self).__name__, "in_dim": in_dim, "width": width, "depth": depth, "code_dim": code_dim
        }

        def stack(d_in: int, d_out: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            d = d_in
            for _ in range(depth):
                layers += [nn.Linear(d, width), nn.ReLU()]
                d = width
            return nn.Sequential(*layers, nn.Linear(d, d_out))

        self.encoder, self.decoder = stack(in_dim, code_dim), stack(code_dim, in_dim)


class ConvAutoencoder(_Autoencoder):
    """Images in [-1, 1]: conv 4x4/2 stages (``width`` channels, doubling) -> linear to ``code_dim``;
    the decoder mirrors it with transposed convs and ends in tanh. 28 px uses two stages, 32/48 three."""

    def __init__(self, channels: int = 1, image_size: int = 28, width: int = 16, code_dim: int = 64):
        super().__init__()
        stages = up_stages(image_size)
        self.code_dim = code_dim
        self.config = {
            "class": type(self).__name__, "channels": channels, "image_size": image_size, "width": width,
            "code_dim": code_dim,
        }
        bottom, top = image_size >> stages, width << (stages - 1)
        enc: list[nn.Module] = []
        c = channels
        for i in range(stages):
            enc += [nn.Conv2d(c, width << i, 4, 2, 1), nn.LeakyReLU(0.2)]
            c = width << i
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(top * bottom * bottom, code_dim))
        dec: list[nn.Module] = [
            nn.Linear(code_dim, top * bottom * bottom), nn.Unflatten(1, (top, bottom, bottom)), nn.ReLU()
        ]
        for i in reversed(range(stages)):
            out = channels if i == 0 else width << (i - 1)
            dec.append(nn.ConvTranspose2d(width << i, out, 4, 2, 1))
            dec.append(nn.Tanh() if i == 0 else nn.ReLU())
        self.decoder = nn.Sequential(*dec)

"""The networks of the xICFG and WGAN-TS authors' code, for their GPU settings.

- ``DCGANxGenerator`` / ``DCGANxDiscriminator``: the "DCGAN extension" of riejohnson/cfg-gan-pt (netdef.py):
  5x5 stride-2 (transposed) convolutions, each followed by a 1x1 convolution, batch norm optional; width 32
  on MNIST, 64 otherwise; depth 3 at 32 px, 4 at 64 px. Convolution weights ~ N(0, 0.01^2) as there.
- ``ResNet4Generator`` / ``ResNet4Discriminator``: its 4-block ResNet for 64 px LSUN. As that code
  computes it: D's blocks apply their first conv to the block input (no pre-activation), and G's blocks
  are ReLU, 2x nearest up-sampling, conv 3x3, ReLU, conv 3x3, BN, plus a 1x1-conv shortcut.

The 64 px DCGAN the WGAN-TS authors used (harryliew/WGAN-TS ``DCGAN_G_nobn`` / ``DCGAN_D_nobn_bias``) is
``repro.nets.dcgan`` with ``batch_norm: false``.
"""
from __future__ import annotations

from torch import Tensor, nn

from repro.nets.base import Discriminator

__all__ = [
    "DCGANxGenerator", "DCGANxDiscriminator", "ResNet4Generator", "ResNet4Discriminator",
]


def _init_convs(net: nn.Module, std: float) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _norm(batch_norm: bool, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _check(image_size: int, depth: int) -> int:
    if depth < 1 or image_size % (2**depth):
        raise ValueError(f"image_size {image_size} must be a multiple of 2^depth = {2**depth}")
    return image_size // 2**depth


class DCGANxGenerator(nn.Module):
    """z -> linear to (w 2^(depth-1)) x s x s -> (depth-1) x [ReLU, convT 5x5/2, BN, ReLU, conv 1x1, BN]
    -> ReLU, convT 5x5/2 -> tanh, s = image_size / 2^depth."""

    def __init__(self, z_dim: int = 100, image_size: int = 32, channels: int = 1, width: int = 32, depth: int = 3,
                 batch_norm: bool = True):
        super().__init__()
        self.z_dim, self.bottom = z_dim, _check(image_size, depth)
        ch = width * 2 ** (depth - 1)
        self.top_channels = ch
        self.proj = nn.Linear(z_dim, ch * self.bottom**2)
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.ReLU(), nn.ConvTranspose2d(ch, ch // 2, 5, 2, 2, output_padding=1), _norm(batch_norm, ch // 2),
                       nn.ReLU(), nn.Conv2d(ch // 2, ch // 2, 1), _norm(batch_norm, ch // 2)]
            ch //= 2
        layers += [nn.ReLU(), nn.ConvTranspose2d(ch, channels, 5, 2, 2, output_padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_convs(self, 0.01)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.proj(z).view(-1, self.top_channels, self.bottom, self.bottom))


class DCGANxDiscriminator(Discriminator):
    """conv 5x5/2 (LReLU 0.2) -> (depth-1) x [conv 5x5/2, BN, LReLU, conv 1x1, BN, LReLU] -> linear."""

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 32, depth: int = 3,
                 batch_norm: bool = True, slope: float = 0.2):
        super().__init__()
        size = _check(image_size, depth)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 5, 2, 2), nn.LeakyReLU(slope)]
        ch = width
        for _ in range(depth - 1):
            layers += [nn.Conv2d(ch, 2 * ch, 5, 2, 2), _norm(batch_norm, 2 * ch), nn.LeakyReLU(slope),
                       nn.Conv2d(2 * ch, 2 * ch, 1), _norm(batch_norm, 2 * ch), nn.LeakyReLU(slope)]
            ch *= 2
        self.set_body(nn.Sequential(*layers, nn.Flatten()), ch * size * size, "none")
        _init_convs(self, 0.01)


class _GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, batch_norm: bool):
        super().__init__()
        self.main = nn.Sequential(nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1), _norm(batch_norm, cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class _DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, batch_norm: bool, first: bool):
        super().__init__()
        mid = cout if first else cin
        self.main = nn.Sequential(nn.Conv2d(cin, mid, 3, 1, 1), nn.ReLU(), nn.Conv2d(mid, cout, 3, 1, 1),
                                  _norm(batch_norm, cout), nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class ResNet4Generator(nn.Module):
    """z -> linear to 8w x s x s -> 4 up-sampling blocks (8w, 4w, 2w, w, w) -> ReLU, conv 3x3 -> tanh."""

    def __init__(self, z_dim: int = 100, image_size: int = 64, channels: int = 3, width: int = 64,
                 batch_norm: bool = True):
        super().__init__()
        self.z_dim, self.bottom = z_dim, _check(image_size, 4)
        widths = [8 * width, 4 * width, 2 * width, width, width]
        self.proj = nn.Linear(z_dim, widths[0] * self.bottom**2)
        self.blocks = nn.Sequential(*(_GBlock(a, b, batch_norm) for a, b in zip(widths, widths[1:])))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh())
        self.top_channels = widths[0]
        _init_convs(self, 0.01)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.blocks(self.proj(z).view(-1, self.top_channels, self.bottom, self.bottom)))


class ResNet4Discriminator(Discriminator):
    """4 down-sampling blocks (w, 2w, 4w, 8w) -> ReLU -> linear."""

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64, batch_norm: bool = True):
        super().__init__()
        size = _check(image_size, 4)
        widths = [channels, width, 2 * width, 4 * width, 8 * width]
        blocks = [_DBlock(a, b, batch_norm, i == 0) for i, (a, b) in enumerate(zip(widths, widths[1:]))]
        self.set_body(nn.Sequential(*blocks, nn.ReLU(), nn.Flatten()), widths[-1] * size * size, "none")
        _init_convs(self, 0.01)

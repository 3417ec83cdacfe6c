"""The small stacked-MNIST networks of Metz et al. 2017 (Unrolled GAN, App. E), as PacGAN Table 3 reuses them.

G: z -> fc 4x4x64 -> 3x3 transposed convs to 32, 16, 8 channels (28 px) -> 3x3 conv to 3 channels, tanh.
D: 3x3 stride-2 convs of ``widths`` channels (2/4/8: D = 1/4 of G; 4/8/16: D = 1/2 of G), BN and
LeakyReLU(0.3), then a linear output. ``activation`` / ``slope`` / ``init``: ``repro.nets.layers``.
"""
from __future__ import annotations

from torch import Tensor, nn

from repro.nets.base import Discriminator
from repro.nets.layers import Init, initialize, make_activation
from repro.normalization import feature_norm, wrap

__all__ = ["UnrolledGenerator", "UnrolledDiscriminator"]


class UnrolledGenerator(nn.Module):
    def __init__(self, z_dim: int = 256, channels: int = 3, widths: tuple[int, int, int, int] = (64, 32, 16, 8),
                 activation: str = "relu", slope: float = 0.2, init: Init = Init()):
        super().__init__()
        self.z_dim, self.top = z_dim, widths[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * widths[0])
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), make_activation(activation, slope)]
        # 4 -> 7 -> 14 -> 28 with 3x3 kernels: output_padding 0, 1, 1
        for c_in, c_out, pad in zip(widths[:-1], widths[1:], (0, 1, 1)):
            up = nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=pad)
            layers += [up, nn.BatchNorm2d(c_out), make_activation(activation, slope)]
        layers += [nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        initialize(self, init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(-1, self.top, 4, 4))


class UnrolledDiscriminator(Discriminator):
    """``features(x)`` is the flattened last conv map, ``head`` the linear output (hooks for RFGAN / GN)."""

    def __init__(self, channels: int = 3, widths: tuple[int, ...] = (2, 4, 8), slope: float = 0.3,
                 batch_norm: bool = True, norm: str = "none", activation: str = "leaky_relu", init: Init = Init()):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for w in widths:  # 28 -> 14 -> 7 -> 4
            layers += [wrap(nn.Conv2d(c, w, 3, 2, 1), norm),
                       nn.BatchNorm2d(w) if batch_norm else feature_norm(norm, w), make_activation(activation, slope)]
            c = w
        self.set_body(nn.Sequential(*layers, nn.Flatten()), c * 4 * 4, norm)
        initialize(self, init)

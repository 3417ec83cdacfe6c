"""The SN-GAN paper's "standard CNN" (Miyato et al. 2018, Table 3), with a width multiplier.

G: z -> dense M_g x M_g x 8w -> deconv 4x4/2 (BN, ReLU) halving channels -> conv 3x3 -> tanh.
D: conv 3x3/1 and 4x4/2 pairs at w, 2w, 4w channels -> conv 3x3/1 at 8w -> dense -> 1, LeakyReLU 0.1.
w = 64 is the paper's network. 32 and 48 px use three up-sampling stages (M_g = 4, 6); 28 px (MNIST)
uses two (M_g = 7), since 28 is not a multiple of 8. ``activation`` / ``slope`` / ``init``: ``repro.nets.layers``.
``attention_at``: a SAGAN self-attention block after the first stage at that resolution (``repro.nets.attention``).
G's ``num_classes`` makes every BN class-conditional (``repro.nets.conditional_bn``; Miyato & Koyama 2018), G(z, y).
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from repro.nets.attention import AttentionSlot
from repro.nets.base import Discriminator
from repro.nets.conditional_bn import ConditionalSequential, batch_norm_2d, check_labels
from repro.nets.layers import Init, initialize, make_activation
from repro.normalization import feature_norm, wrap

__all__ = ["StandardCNNGenerator", "StandardCNNDiscriminator", "up_stages"]


def up_stages(image_size: int) -> int:
    """Number of 2x stages from the bottom resolution to ``image_size``."""
    if image_size % 8 == 0:
        return 3
    if image_size % 4 == 0:
        return 2
    raise ValueError(f"image_size {image_size} must be a multiple of 4 (28, 32 and 48 are the papers')")


class StandardCNNGenerator(nn.Module):
    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 64,
                 activation: str = "relu", slope: float = 0.2, init: Init = Init(), batch_norm: bool = True,
                 attention_at: int | None = None, num_classes: int | None = None):
        super().__init__()
        if num_classes is not None and not batch_norm:
            raise ValueError("StandardCNNGenerator: num_classes conditions the batch norms; it needs batch_norm: true")
        self.z_dim, self.num_classes = z_dim, num_classes
        stages = up_stages(image_size)
        self.bottom = image_size >> stages
        ch = 8 * width
        self.top_channels = ch
        self.fc = nn.Linear(z_dim, self.bottom * self.bottom * ch)
        # no BN: an unstable setup of Ra-GANs
        bn = (lambda c: batch_norm_2d(c, num_classes)) if batch_norm else (lambda _: nn.Identity())
        slot = AttentionSlot(attention_at)
        layers: list[nn.Module] = [bn(ch), make_activation(activation, slope), *slot.after(self.bottom, ch)]
        for stage in range(1, stages + 1):
            up = nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1)
            layers += [up, bn(ch // 2), make_activation(activation, slope)]
            ch //= 2
            layers += slot.after(self.bottom << stage, ch)
        slot.check("model.generator (StandardCNNGenerator)")
        layers += [nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh()]
        self.net = ConditionalSequential(*layers)
        initialize(self, init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        check_labels(self, y)
        return self.net(self.fc(z).view(-1, self.top_channels, self.bottom, self.bottom), y)


class StandardCNNDiscriminator(Discriminator):
    def __init__(
        self, image_size: int = 32, channels: int = 3, width: int = 64, slope: float = 0.1, norm: str = "none",
        activation: str = "leaky_relu", init: Init = Init(), attention_at: int | None = None,
    ):
        super().__init__()
        up_stages(image_size)
        spec = [  # (out channels, kernel, stride)
            (width, 3, 1), (width, 4, 2),
            (2 * width, 3, 1), (2 * width, 4, 2),
            (4 * width, 3, 1), (4 * width, 4, 2),
            (8 * width, 3, 1),
        ]
        layers: list[nn.Module] = []
        c, size = channels, image_size
        slot = AttentionSlot(attention_at, norm)
        for i, (out, k, s) in enumerate(spec):
            layers.append(wrap(nn.Conv2d(c, out, k, s, 1), norm))
            if i > 0:  # no normalization of the input layer's features
                layers.append(feature_norm(norm, out))
            layers.append(make_activation(activation, slope))
            c, size = out, math.floor((size + 2 - k) / s) + 1
            layers += slot.after(size, c)
        slot.check("model.discriminator (StandardCNNDiscriminator)")
        self.set_body(nn.Sequential(*layers, nn.Flatten()), c * size * size, norm)
        initialize(self, init)

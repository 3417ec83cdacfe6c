"""DCGAN (Radford et al. 2016, Sec. 3 "approach and model architecture", Fig. 1), at 28, 32, 64 (or any size
that halves down to a 4-7 px bottom).

G: z (as a 1x1 map) -> transposed conv (kernel = bottom) to 2^(s-1) w channels at bottom x bottom -> (s - 1)
transposed convs 4x4/2 halving the channels -> transposed conv 4x4/2 to the image, tanh. BN and ReLU after every
layer but the last (the paper: "not applying batchnorm to the generator output layer").
D: conv 4x4/2 to w channels -> (s - 1) convs 4x4/2 doubling the channels, LeakyReLU 0.2 after each, BN after every
conv but the first ("and the discriminator input layer") -> a linear head on the flattened bottom x bottom map
(the paper's "flattened and fed into a single sigmoid output"; the sigmoid lives in the loss).
s is the number of 2x stages from the bottom (4 at 64 px, 3 at 32, 2 at 28 with a 7 px bottom); w = 64 and z in
R^100 are the paper's LSUN net at 64 px. Convolutions have no bias where BN follows (it would be cancelled);
without BN, D's convolutions keep theirs (WGAN-TS's ``DCGAN_D_nobn_bias``, the net its authors used at 64 px).
Weights ~ N(0, 0.02^2) (the paper), biases 0. ``attention_at``: a SAGAN block at that resolution (repro.nets.attention).
"""
from __future__ import annotations

from torch import Tensor, nn

from repro.nets.attention import AttentionSlot
from repro.nets.base import Discriminator
from repro.nets.layers import Init, initialize

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_stages"]

RADFORD_INIT = Init(scheme="normal", std=0.02, zero_bias=True)


def dcgan_stages(image_size: int) -> int:
    """The number of 2x stages s from a bottom of 4-7 px up to ``image_size`` (``ValueError`` if there is none)."""
    stages = 0
    while image_size % 2 ** (stages + 1) == 0 and image_size >> (stages + 1) >= 4:
        stages += 1
    if stages == 0 or image_size >> stages > 7:
        raise ValueError(f"DCGAN image_size must halve down to a 4-7 px bottom (e.g. 28, 32, 48, 64), got {image_size}")
    return stages


def _bn(batch_norm: bool, channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if batch_norm else []


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 100, image_size: int = 64, channels: int = 3, width: int = 64,
                 batch_norm: bool = True, attention_at: int | None = None, init: Init = RADFORD_INIT):
        super().__init__()
        stages = dcgan_stages(image_size)
        self.z_dim, size = z_dim, image_size >> stages
        ch = width * 2 ** (stages - 1)
        slot = AttentionSlot(attention_at)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, size, 1, 0, bias=False), *_bn(batch_norm, ch),
                                   nn.ReLU(), *slot.after(size, ch)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), *_bn(batch_norm, ch // 2), nn.ReLU()]
            ch, size = ch // 2, size * 2
            layers += slot.after(size, ch)
        slot.check("model.generator (DCGANGenerator)")
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        initialize(self, init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(len(z), -1, 1, 1))


class DCGANDiscriminator(Discriminator):
    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64, batch_norm: bool = True,
                 slope: float = 0.2, attention_at: int | None = None, init: Init = RADFORD_INIT):
        super().__init__()
        stages = dcgan_stages(image_size)
        size, ch = image_size // 2, width
        slot = AttentionSlot(attention_at)
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=not batch_norm), nn.LeakyReLU(slope),
                                   *slot.after(size, ch)]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=not batch_norm), *_bn(batch_norm, 2 * ch),
                       nn.LeakyReLU(slope)]
            ch, size = 2 * ch, size // 2
            layers += slot.after(size, ch)
        slot.check("model.discriminator (DCGANDiscriminator)")
        self.set_body(nn.Sequential(*layers, nn.Flatten()), ch * size * size, "none")
        initialize(self, init)

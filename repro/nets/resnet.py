"""The SN-GAN paper's ResNet generator / discriminator (Miyato et al. 2018, Tables 4-5, App. B.2).

CIFAR-10 (32 px): G linear -> 4x4x256, three up-blocks of 256; D optimized down-block, down-block,
two plain blocks at 128, ReLU, global sum pooling, linear. STL-10 (48 px): G 6x6x512, up-blocks
256/128/64; D down-blocks 64/128/256/512, a plain block at 1024. ``width`` scales all channels
(paper: 1.0). ``activation`` (ReLU in the paper) / ``slope`` / ``init``: ``repro.nets.layers``.
``attention_at``: a SAGAN self-attention block after the first block at that resolution (``repro.nets.attention``;
at 16 in G and D for 32 px, as StudioGAN's CIFAR-10 SAGAN places it).
G's ``num_classes`` makes the blocks' BNs class-conditional, G(z, y) (the projection paper's conditional
G; its code keeps the last BN before the output convolution unconditional, as here).
"""
from __future__ import annotations

from torch import Tensor, nn
import torch.nn.functional as F

from repro.nets.attention import AttentionSlot
from repro.nets.base import Discriminator
from repro.nets.conditional_bn import ConditionalLayer, ConditionalSequential, batch_norm_2d, check_labels
from repro.nets.layers import Init, initialize, make_activation
from repro.normalization import feature_norm, wrap

__all__ = ["ResNetGenerator", "ResNetDiscriminator"]

_G_CHANNELS = {32: (256, 256, 256, 256), 48: (512, 256, 128, 64)}
_D_CHANNELS = {32: (128, 128, 128, 128), 48: (64, 128, 256, 512, 1024)}
_D_DOWN = {32: (True, True, False, False), 48: (True, True, True, True, False)}


def _check_size(image_size: int) -> None:
    if image_size not in _G_CHANNELS:
        raise ValueError(f"the SN-GAN ResNet is defined for image_size 32 or 48, not {image_size}")


class _UpBlock(ConditionalLayer):
    """BN-act-up-conv-BN-act-conv with a 1x1 up-sampled shortcut (act: ReLU in the paper); the BNs
    class-conditional with ``num_classes``."""

    def __init__(self, cin: int, cout: int, act: nn.Module, num_classes: int | None = None):
        super().__init__()
        self.act = act
        self.bn1, self.bn2 = batch_norm_2d(cin, num_classes), batch_norm_2d(cout, num_classes)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        def bn(layer: nn.Module, h: Tensor) -> Tensor:
            return layer(h) if y is None else layer(h, y)

        h = F.interpolate(self.act(bn(self.bn1, x)), scale_factor=2)
        h = self.conv2(self.act(bn(self.bn2, self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class _DownBlock(nn.Module):
    """(act)-conv-act-conv-(avgpool) with a 1x1 shortcut; ``first`` is the "optimized" input block."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool, norm: str, act: nn.Module):
        super().__init__()
        self.down, self.first, self.act = down, first, act
        self.conv1, self.conv2 = wrap(nn.Conv2d(cin, cout, 3, 1, 1), norm), wrap(nn.Conv2d(cout, cout, 3, 1, 1), norm)
        self.norm1, self.norm2 = feature_norm(norm, cout), feature_norm(norm, cout)
        self.shortcut = wrap(nn.Conv2d(cin, cout, 1), norm) if (cin != cout or down) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else self.act(x)
        h = self.norm2(self.conv2(self.act(self.norm1(self.conv1(h)))))
        s = x
        if self.down:
            h = F.avg_pool2d(h, 2)
            s = F.avg_pool2d(self.shortcut(x), 2) if not self.first else self.shortcut(F.avg_pool2d(x, 2))
        else:
            s = self.shortcut(x)
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: float = 1.0,
                 activation: str = "relu", slope: float = 0.2, init: Init = Init(), attention_at: int | None = None,
                 num_classes: int | None = None):
        super().__init__()
        _check_size(image_size)
        self.z_dim, self.num_classes = z_dim, num_classes
        ch = [max(1, int(c * width)) for c in _G_CHANNELS[image_size]]
        self.bottom = image_size // 8
        self.fc = nn.Linear(z_dim, self.bottom * self.bottom * ch[0])
        act = make_activation(activation, slope)
        slot = AttentionSlot(attention_at)
        blocks: list[nn.Module] = [*slot.after(self.bottom, ch[0])]
        for i, (a, b) in enumerate(zip(ch[:-1], ch[1:]), start=1):
            blocks += [_UpBlock(a, b, act, num_classes), *slot.after(self.bottom << i, b)]
        slot.check("model.generator (ResNetGenerator)")
        self.blocks = ConditionalSequential(*blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(ch[-1]), act, nn.Conv2d(ch[-1], channels, 3, 1, 1), nn.Tanh())
        self.top_channels = ch[0]
        initialize(self, init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        check_labels(self, y)
        return self.out(self.blocks(self.fc(z).view(-1, self.top_channels, self.bottom, self.bottom), y))


class ResNetDiscriminator(Discriminator):
    def __init__(self, image_size: int = 32, channels: int = 3, width: float = 1.0, norm: str = "none",
                 activation: str = "relu", slope: float = 0.2, init: Init = Init(), attention_at: int | None = None):
        super().__init__()
        _check_size(image_size)
        ch = [max(1, int(c * width)) for c in _D_CHANNELS[image_size]]
        ins = [channels, *ch[:-1]]
        self.act = make_activation(activation, slope)
        slot = AttentionSlot(attention_at, norm)
        blocks: list[nn.Module] = []
        size = image_size
        for i, (a, b, down) in enumerate(zip(ins, ch, _D_DOWN[image_size])):
            size //= 2 if down else 1
            blocks += [_DownBlock(a, b, down, i == 0, norm, self.act), *slot.after(size, b)]
        slot.check("model.discriminator (ResNetDiscriminator)")
        self.set_body(nn.Sequential(*blocks), ch[-1], norm)
        initialize(self, init)

    def features(self, x: Tensor) -> Tensor:
        return self.act(self.body(x)).sum(dim=(2, 3))  # global sum pooling

"""BigGAN's generator at small scale (Brock et al. 2019, Sec. 3 and App. B; BigGAN-PyTorch ``BigGAN.py``,
``G_arch[32]``): a linear layer to a (4 width) x b x b map, up-blocks of 4 width channels, then BN, ReLU,
a 3x3 conv and tanh. Every linear and conv layer is spectrally normalized (``norm``; BigGAN: SN in G too).

Conditioning of each up-block's two batch norms (``repro.nets.conditional_bn``):

- ``shared_dim > 0`` (the paper's BigGAN): a shared class embedding e(y) of ``shared_dim`` (one table for all
  blocks, Sec. 3 "shared embedding"); with ``hierarchical`` latents z is split into one chunk per up-block plus
  one for the linear layer (App. B "skip-z", BigGAN-PyTorch ``--hier``), and block i's BN gets gamma = 1 + W c_i,
  beta = V c_i of c_i = [e(y), z_i]. Without ``hierarchical`` c_i = e(y) and z goes whole to the linear layer.
- ``shared_dim == 0`` with ``num_classes`` (BigGAN-PyTorch's CIFAR script, no ``--G_shared``): a gamma and beta
  table per class in every BN (no shared embedding, no latent chunks).
- unconditional (``num_classes`` None): hierarchical latents alone (c_i = z_i), or plain BN.

Sizes: 32 px (bottom 4, three up-blocks; BigGAN-PyTorch's arch[32]) and 28 px (bottom 7, two up-blocks, MNIST).
``width`` is BigGAN-PyTorch's ``G_ch`` (64 in its CIFAR script). ``init``: BigGAN-PyTorch's ``N02`` is
``Init(scheme="normal", std=0.02)``, its default ``ortho`` is ``Init(scheme="orthogonal")``; the shared
embedding gets the same scheme.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nets.conditional_bn import (
    ClassConditionalBatchNorm2d,
    ConditionalBatchNorm2d,
    ConditionalLayer,
    check_labels,
)
from repro.nets.layers import Init, initialize
from repro.normalization import wrap

__all__ = ["BigGANGenerator"]

_LAYOUT = {28: (7, 2), 32: (4, 3)}  # image size -> (bottom width, up-blocks)


def _norm(bn: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
    return bn(x, c) if isinstance(bn, ConditionalLayer) else bn(x)


class _GBlock(nn.Module):
    """BigGAN-PyTorch ``layers.GBlock``: BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, shortcut: up then 1x1 conv."""

    def __init__(self, cin: int, cout: int, bn1: nn.Module, bn2: nn.Module, norm: str):
        super().__init__()
        self.bn1, self.bn2 = bn1, bn2
        self.conv1 = wrap(nn.Conv2d(cin, cout, 3, 1, 1), norm)
        self.conv2 = wrap(nn.Conv2d(cout, cout, 3, 1, 1), norm)
        self.shortcut = wrap(nn.Conv2d(cin, cout, 1), norm)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(_norm(self.bn1, x, c)), scale_factor=2)
        h = self.conv2(F.relu(_norm(self.bn2, self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class BigGANGenerator(nn.Module):
    """G(z, y): y integer labels in [0, num_classes) when class-conditional, else G(z)."""

    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 64,
                 num_classes: int | None = None, shared_dim: int = 0, hierarchical: bool = True,
                 norm: str = "spectral", bn_eps: float = 1e-5, init: Init = Init()):
        super().__init__()
        if image_size not in _LAYOUT:
            raise ValueError(f"BigGANGenerator is defined for image_size {' or '.join(map(str, _LAYOUT))}, "
                             f"not {image_size}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"BigGANGenerator.num_classes must be >= 1 or null, got {num_classes}")
        if shared_dim < 0 or (shared_dim and num_classes is None):
            raise ValueError(f"BigGANGenerator.shared_dim {shared_dim}: the shared class embedding needs num_classes "
                             "and shared_dim >= 1; set shared_dim: 0 for an unconditional G")
        if hierarchical and num_classes is not None and not shared_dim:
            raise ValueError("BigGANGenerator: hierarchical latents are concatenated with the shared class "
                             "embedding; set shared_dim >= 1 or hierarchical: false")
        self.bottom, blocks = _LAYOUT[image_size]
        slots = blocks + 1 if hierarchical else 1
        if z_dim % slots:
            raise ValueError(f"BigGANGenerator: hierarchical latents split z into {slots} equal chunks (one per "
                             f"up-block and one for the linear layer); z_dim {z_dim} is not a multiple of {slots}")
        self.z_dim, self.num_classes, self.hierarchical = z_dim, num_classes, hierarchical
        self.chunk = z_dim // slots
        ch = 4 * width
        self.top_channels = ch
        self.shared = nn.Embedding(num_classes, shared_dim) if shared_dim else None
        cond_dim = shared_dim + (self.chunk if hierarchical else 0)

        def bn(features: int) -> nn.Module:
            if cond_dim:
                return ConditionalBatchNorm2d(features, cond_dim, eps=bn_eps, norm=norm)
            if num_classes is not None:
                return ClassConditionalBatchNorm2d(features, num_classes, eps=bn_eps)
            return nn.BatchNorm2d(features, eps=bn_eps)

        self.linear = wrap(nn.Linear(self.chunk, self.bottom * self.bottom * ch), norm)
        self.blocks = nn.ModuleList(_GBlock(ch, ch, bn(ch), bn(ch), norm) for _ in range(blocks))
        self.out = nn.Sequential(nn.BatchNorm2d(ch, eps=bn_eps), nn.ReLU(), wrap(nn.Conv2d(ch, channels, 3, 1, 1), norm),
                                 nn.Tanh())
        initialize(self, init)
        if self.shared is not None and init.scheme == "normal":
            nn.init.normal_(self.shared.weight, 0.0, init.std)
        elif self.shared is not None and init.scheme == "orthogonal":
            nn.init.orthogonal_(self.shared.weight, init.gain)

    def conditions(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, list[Tensor | None]]:
        """The linear layer's latent and each up-block's conditioning input (c_i above)."""
        check_labels(self, y)
        if not self.hierarchical:
            c = self.shared(y) if self.shared is not None else y
            return z, [c] * len(self.blocks)
        first, *rest = z.split(self.chunk, dim=1)
        if self.shared is None:
            return first, list(rest)
        e = self.shared(y)
        return first, [torch.cat([e, zi], 1) for zi in rest]

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        first, conds = self.conditions(z, y)
        h = self.linear(first).view(-1, self.top_channels, self.bottom, self.bottom)
        for block, c in zip(self.blocks, conds):
            h = block(h, c)
        return self.out(h)

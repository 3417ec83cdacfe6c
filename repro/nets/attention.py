"""The SAGAN self-attention block (Zhang et al. 2019, Sec. 4, eq. 1-3, with the released code's pooled keys)
and ``AttentionSlot``, which places one block in a net at a chosen feature-map resolution.

For x of shape (N, C, H, W), with N' = HW / 4 positions after a 2x2 max-pool:

    theta = W_theta x                 (C/8 x HW)    query
    phi   = maxpool(W_phi x)          (C/8 x N')    key
    g     = maxpool(W_g x)            (C/2 x N')    value
    beta  = softmax_j(theta_i^T phi_j)  (HW x N')   each row sums to 1 (eq. 1)
    o     = W_o (g beta^T)            (C x HW)      (eq. 2)
    y     = x + sigma * o,  sigma initialised to 0 (eq. 3; gamma in the paper)

All four maps are 1x1 convolutions without bias (brain-research/self-attention-gan ``sn_non_local_block_sim``);
``norm`` wraps them like every other layer of the net (``spectral`` in SAGAN's G and D).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.normalization import wrap

__all__ = ["SelfAttention", "AttentionSlot"]


class SelfAttention(nn.Module):
    """y = x + sigma * o(x): SAGAN's self-attention over all positions of a (N, C, H, W) feature map."""

    def __init__(self, channels: int, norm: str = "none"):
        super().__init__()
        if channels < 8 or channels % 8:
            raise ValueError(f"self-attention needs a multiple of 8 channels (keys have C/8), got {channels}; "
                             "choose another attention_at or a wider net")
        self.channels = channels
        self.theta = wrap(nn.Conv2d(channels, channels // 8, 1, bias=False), norm)
        self.phi = wrap(nn.Conv2d(channels, channels // 8, 1, bias=False), norm)
        self.g = wrap(nn.Conv2d(channels, channels // 2, 1, bias=False), norm)
        self.o = wrap(nn.Conv2d(channels // 2, channels, 1, bias=False), norm)
        self.sigma = nn.Parameter(torch.zeros(1))

    def attention_map(self, x: Tensor) -> Tensor:
        """beta: (N, HW, HW/4), row i the softmax over the pooled positions j of theta_i . phi_j."""
        theta = self.theta(x).flatten(2)                    # (N, C/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)       # (N, C/8, HW/4)
        return torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"self-attention max-pools 2x2: feature maps need even sides, got {h}x{w}")
        beta = self.attention_map(x)
        g = F.max_pool2d(self.g(x), 2).flatten(2)           # (N, C/2, HW/4)
        # a fresh (contiguous) matmul result, so view holds for channels-last inputs too (flatten copies those)
        attended = (g @ beta.transpose(1, 2)).view(n, self.channels // 2, h, w)
        return x + self.sigma * self.o(attended)


class AttentionSlot:
    """Where a net puts its one ``SelfAttention``: after the first layer / block whose output has resolution ``at``.

    A net calls ``after(size, channels)`` after each stage (it returns ``[block]`` once, else ``[]``) and
    ``check(net)`` at the end, which names the valid resolutions if ``at`` was never reached.
    """

    def __init__(self, at: int | None, norm: str = "none"):
        self.at, self.norm = at, norm
        self.sizes: list[int] = []
        self.placed = False

    def after(self, size: int, channels: int) -> list[nn.Module]:
        self.sizes.append(size)
        if self.at is None or self.placed or size != self.at or size % 2:
            return []
        self.placed = True
        return [SelfAttention(channels, self.norm)]

    def check(self, net: str) -> None:
        if self.at is not None and not self.placed:
            valid = ", ".join(str(s) for s in sorted(set(self.sizes)) if s % 2 == 0)
            raise ValueError(f"{net}: attention_at {self.at} is not a feature-map resolution of this net; "
                             f"valid: {valid} (or null for none)")

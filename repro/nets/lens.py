"""TAN lenses (Sajjadi et al. 2018, Fig. 1): a map L with L(x) of x's shape, placed between the real
data and D. Both lenses are residual, L(x) = x + r(x), with r's last layer zero-initialized when
``identity_init`` is set, so a fresh lens is exactly the identity.

The paper's lens architecture is not in any source we could read (see
``/work/shared/reference/published_numbers.md`` Sec. 3); the sizes here are config values.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPLens", "ConvLens"]


def _zero_last(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class MLPLens(nn.Module):
    """Lens for flat data: x + MLP(x) with ``depth`` hidden ReLU layers of ``width``."""

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 2, identity_init: bool = True):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"MLPLens needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        layers: list[nn.Module] = []
        d = dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        out = nn.Linear(d, dim)
        if identity_init:
            _zero_last(out)
        self.residual = nn.Sequential(*layers, out)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


class ConvLens(nn.Module):
    """Lens for images: x + r(x), r = conv 3x3 to ``width`` then ``blocks`` residual blocks
    (two 3x3 convs with ReLU) then conv 3x3 back to ``channels``; spatial size is kept."""

    def __init__(self, channels: int = 1, width: int = 16, blocks: int = 2, identity_init: bool = True):
        super().__init__()
        if blocks < 0 or width < 1:
            raise ValueError(f"ConvLens needs blocks >= 0 and width >= 1, got blocks={blocks}, width={width}")
        self.stem = nn.Conv2d(channels, width, 3, 1, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(width, channels, 3, 1, 1))
        if identity_init:
            _zero_last(self.out[1])

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return x + self.out(h)

"""Fully connected generator / discriminator pair for 2-D data."""
from __future__ import annotations

from torch import Tensor, nn

from repro.nets.base import Discriminator
from repro.nets.layers import Init, initialize, make_activation
from repro.normalization import feature_norm, wrap

__all__ = ["MLPGenerator", "MLPDiscriminator", "MaxoutDiscriminator"]


class MLPGenerator(nn.Module):
    """z -> ``depth`` hidden layers of ``width`` (optionally batch-normed; ``activation``, default ReLU) -> ``out_dim``.

    PacGAN's 2-D G: z_dim=2, width=400, depth=4, batch_norm=True; WGAN-GP's gan_toy: width=512, depth=3.
    ``slope`` is LeakyReLU's; ``init`` the weight initialization (``repro.nets.layers``). ``hidden_bias``:
    biases on the hidden linear layers (PacGAN's code has none: batch norm's shift follows each);
    ``bn_momentum``: weight of a batch in the running statistics (PyTorch's 0.1; PacGAN's code 0.05).
    """

    def __init__(self, z_dim: int = 2, out_dim: int = 2, width: int = 400, depth: int = 4, batch_norm: bool = True,
                 activation: str = "relu", slope: float = 0.2, init: Init = Init(), hidden_bias: bool = True,
                 bn_momentum: float = 0.1):
        super().__init__()
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"generator bn_momentum must be in (0, 1], got {bn_momentum}")
        self.z_dim = z_dim
        layers: list[nn.Module] = []
        d = z_dim
        for _ in range(depth):
            norm = nn.BatchNorm1d(width, momentum=bn_momentum) if batch_norm else nn.Identity()
            layers += [nn.Linear(d, width, bias=hidden_bias), norm, make_activation(activation, slope)]
            d = width
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        initialize(self, init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(Discriminator):
    """x -> ``depth`` hidden layers of ``width`` (``activation``, default LeakyReLU ``slope``) -> one logit.

    ``features(x)`` returns the last hidden layer; ``head`` maps it to the output (hooks for RFGAN).
    """

    def __init__(self, in_dim: int = 2, width: int = 400, depth: int = 3, slope: float = 0.2, norm: str = "none",
                 activation: str = "leaky_relu", init: Init = Init()):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [wrap(nn.Linear(d, width), norm), feature_norm(norm, width), make_activation(activation, slope)]
            d = width
        self.set_body(nn.Sequential(*layers), d, norm)
        initialize(self, init)


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al. 2013, eq. 1): the max over ``pieces`` linear maps of each feature.

    ``max(dim).values``, not ``amax``: the same values, and the gradient goes to the maximal piece by index
    (a scatter) instead of through ``amax``'s mask-and-count backward; 1.1x faster for a whole PacGAN step on
    CPU (``benchmarks/pacgan_step.py``), bit-identical unless two pieces tie exactly, where ``amax`` would
    split the gradient evenly and this gives it to one of them (both are subgradients of the max).
    """

    def __init__(self, in_dim: int, width: int, pieces: int, norm: str = "none"):
        super().__init__()
        self.width, self.pieces = width, pieces
        self.linear = wrap(nn.Linear(in_dim, width * pieces), norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(len(x), self.width, self.pieces).max(dim=2).values


class MaxoutDiscriminator(Discriminator):
    """x -> ``depth`` maxout layers of ``width`` units with ``pieces`` pieces -> one logit.

    PacGAN's / VEEGAN's 2-D D (Lin et al. 2018, Sec. 4.1): depth=3, width=200, pieces=5.
    """

    def __init__(self, in_dim: int = 2, width: int = 200, depth: int = 3, pieces: int = 5, norm: str = "none",
                 init: Init = Init()):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [Maxout(d, width, pieces, norm), feature_norm(norm, width)]
            d = width
        self.set_body(nn.Sequential(*layers), d, norm)
        initialize(self, init)

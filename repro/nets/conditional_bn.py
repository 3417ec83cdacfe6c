"""Conditional batch normalization: BN without its own affine, whose per-channel scale and shift are
computed from a conditioning input (de Vries et al. 2017, "Modulating early visual processing by
language", Eq. 2-3; Miyato & Koyama 2018, "cGANs with Projection Discriminator", Sec. 4, G's
"conditional batch normalization").

    CBN(x | c) = gamma(c) * (x - E[x]) / sqrt(Var[x] + eps) + beta(c)

- ``ConditionalBatchNorm{1,2}d(num_features, cond_dim)``: gamma = 1 + Linear(c), beta = Linear(c), both
  linears without bias, from a float conditioning vector c (BigGAN's ``ccbn``: c is the shared class
  embedding, optionally concatenated with a latent chunk). ``norm`` wraps the two linears
  (``repro.normalization.wrap``; BigGAN uses "spectral").
- ``ClassConditionalBatchNorm{1,2}d(num_features, num_classes)``: gamma and beta looked up per class from
  an ``nn.Embedding`` (SN-GAN projection code's ``CategoricalConditionalBatchNormalization``); gamma
  starts at 1 and beta at 0 for every class, so at initialization it is plain BN.

Every conditional layer takes ``forward(x, c)``; ``ConditionalSequential`` runs a stack of layers and
hands ``c`` to the conditional ones only.
"""
from __future__ import annotations

from torch import Tensor, nn

from repro.normalization import wrap

__all__ = [
    "ConditionalLayer",
    "ConditionalBatchNorm1d",
    "ConditionalBatchNorm2d",
    "ClassConditionalBatchNorm1d",
    "ClassConditionalBatchNorm2d",
    "ConditionalSequential",
    "batch_norm_2d",
    "check_labels",
]


class ConditionalLayer(nn.Module):
    """Marks a layer whose ``forward(x, c)`` also takes the conditioning input ``c`` (see ``ConditionalSequential``)."""


class _ConditionalBatchNorm(ConditionalLayer):
    """BN (no affine) of ``x``, then ``x * (1 + gain(c)) + bias(c)`` per channel; ``gain`` / ``bias`` map
    ``c`` of shape (N, ...) to (N, num_features)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, gain: nn.Module, bias: nn.Module):
        super().__init__()
        self.bn, self.gain, self.bias = bn, gain, bias

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if c.shape[0] != x.shape[0]:
            raise ValueError(f"conditional batch norm: {x.shape[0]} samples but {c.shape[0]} conditioning inputs")
        shape = (x.shape[0], -1) + (1,) * (x.dim() - 2)
        gamma = 1 + self.gain(c).view(shape)
        return self.bn(x) * gamma + self.bias(c).view(shape)


def _check_sizes(num_features: int, cond: int, what: str) -> None:
    if num_features < 1 or cond < 1:
        raise ValueError(f"conditional batch norm needs num_features >= 1 and {what} >= 1, got {num_features}, {cond}")


class _VectorConditionalBatchNorm(_ConditionalBatchNorm):
    bn_class: type[nn.modules.batchnorm._BatchNorm]

    def __init__(self, num_features: int, cond_dim: int, eps: float = 1e-5, momentum: float = 0.1,
                 norm: str = "none"):
        _check_sizes(num_features, cond_dim, "cond_dim")
        super().__init__(self.bn_class(num_features, eps, momentum, affine=False),
                         wrap(nn.Linear(cond_dim, num_features, bias=False), norm),
                         wrap(nn.Linear(cond_dim, num_features, bias=False), norm))


class ConditionalBatchNorm2d(_VectorConditionalBatchNorm):
    """BN over (N, C, H, W) with gamma = 1 + Linear(c), beta = Linear(c) from c of shape (N, cond_dim)."""

    bn_class = nn.BatchNorm2d


class ConditionalBatchNorm1d(_VectorConditionalBatchNorm):
    """BN over (N, C) with gamma = 1 + Linear(c), beta = Linear(c) from c of shape (N, cond_dim)."""

    bn_class = nn.BatchNorm1d


class _ClassConditionalBatchNorm(_ConditionalBatchNorm):
    bn_class: type[nn.modules.batchnorm._BatchNorm]

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5, momentum: float = 0.1):
        _check_sizes(num_features, num_classes, "num_classes")
        gain, bias = nn.Embedding(num_classes, num_features), nn.Embedding(num_classes, num_features)
        nn.init.zeros_(gain.weight)  # gamma = 1 + 0: plain BN at initialization
        nn.init.zeros_(bias.weight)
        super().__init__(self.bn_class(num_features, eps, momentum, affine=False), gain, bias)
        self.num_classes = num_classes

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if c.dim() != 1 or c.dtype.is_floating_point:
            raise ValueError(f"class-conditional batch norm takes integer labels of shape (N,), got {c.dtype} "
                             f"of shape {tuple(c.shape)}")
        return super().forward(x, c)


class ClassConditionalBatchNorm2d(_ClassConditionalBatchNorm):
    """BN over (N, C, H, W) with gamma_y, beta_y per class y (integer labels of shape (N,))."""

    bn_class = nn.BatchNorm2d


class ClassConditionalBatchNorm1d(_ClassConditionalBatchNorm):
    """BN over (N, C) with gamma_y, beta_y per class y (integer labels of shape (N,))."""

    bn_class = nn.BatchNorm1d


class ConditionalSequential(nn.Sequential):
    """``nn.Sequential`` whose ``forward(x, c)`` passes ``c`` to every ``ConditionalLayer`` and ``x`` alone to the rest."""

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, c) if isinstance(layer, ConditionalLayer) else layer(x)
        return x


def batch_norm_2d(num_features: int, num_classes: int | None) -> nn.Module:
    """``nn.BatchNorm2d`` (affine), or its class-conditional version when ``num_classes`` is set: how a net
    with a ``num_classes`` option builds each BN layer it conditions."""
    if num_classes is None:
        return nn.BatchNorm2d(num_features)
    return ClassConditionalBatchNorm2d(num_features, num_classes)


def check_labels(net: nn.Module, y: Tensor | None) -> None:
    """One clear ``ValueError`` unless ``y`` is given exactly when ``net`` is class-conditional
    (``net.num_classes`` set)."""
    num_classes = getattr(net, "num_classes", None)
    if (num_classes is None) != (y is None):
        if y is None:
            raise ValueError(f"{type(net).__name__} is class-conditional (num_classes {num_classes}): pass labels y")
        raise ValueError(f"{type(net).__name__} takes no labels: set its num_classes to condition it on classes")

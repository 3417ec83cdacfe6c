"""What wraps or follows discriminator layers: the per-layer normalization options.

``wrap(layer, norm)`` re-parametrizes a weight layer; ``feature_norm(norm, channels)`` is the module
placed after a hidden layer. Networks call only these two, so a new option is added here alone.

Options (Miyato et al. 2018 and the comparators of its Sec. 4):

- ``none``      plain layers;
- ``spectral``  W_SN = W / sigma(W), sigma by one power iteration per training forward (Alg. 1);
- ``weight``    every output unit's weight row scaled to unit L2 norm (Salimans & Kingma 2016 with the
                gain g removed, as the SN paper does: "the gamma multipliers were removed");
- ``batch``     batch norm after each hidden layer, gamma removed (no learned scale), beta kept;
- ``layer``     layer norm (over all features of a sample) after each hidden layer, gamma removed, beta kept.

The γ removal matters: a learned scale would let D undo the normalization and grow its Lipschitz
constant freely, which is what the comparison in the SN paper controls for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "NORMS",
    "wrap",
    "feature_norm",
    "check_norm",
    "SpectralNorm",
    "TransposedSpectralNorm",
    "UnitRowNorm",
    "ShiftOnlyNorm",
    "spectral_norm",
    "weight_layers",
    "has_parametrization",
    "raw_weight",
    "batch_norm_names",
    "batch_coupling_names",
    "check_per_sample",
]

NORMS: tuple[str, ...] = ("none", "spectral", "weight", "batch", "layer")
_EPS = 1e-12


def check_norm(norm: str) -> str:
    """Return ``norm`` or raise one clear error listing the valid options."""
    if norm not in NORMS:
        raise ValueError(f"unknown normalization {norm!r}; valid: {', '.join(NORMS)}")
    return norm


class SpectralNorm(nn.Module):
    """Parametrization W -> W / sigma(W) of Miyato et al. 2018, Alg. 1, on W reshaped to (out, in*kh*kw).

    In training mode each forward runs one power iteration from the stored u:
    v <- W^T u / ||W^T u||, u <- W v / ||W v||, sigma = u^T W v (Alg. 1, in this order), and stores
    u and v as buffers (so they are saved in checkpoints). In eval mode no iteration runs; sigma comes
    from the stored u, v. Gradients flow through W only (u, v are constants), as in the paper's eq. 12.

    Written here rather than using ``torch.nn.utils.parametrizations.spectral_norm``: PyTorch's power
    method updates u first and then v and takes sigma from the newer v, i.e. a half-step ahead of
    Alg. 1, which updates v first and takes sigma = u^T W v with the newer u.
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        if weight.dim() < 2:
            raise ValueError(f"spectral norm needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
        w = weight.detach().flatten(1)
        u = F.normalize(torch.randn(w.shape[0], dtype=w.dtype, device=w.device), dim=0, eps=_EPS)
        self.register_buffer("u", u)  # u~ of Alg. 1: random init, then carried across steps
        self.register_buffer("v", F.normalize(w.t() @ u, dim=0, eps=_EPS))

    @torch.no_grad()
    def power_iteration(self, w: Tensor) -> None:
        """One step of Alg. 1 on the reshaped weight ``w``, updating the stored u and v in place."""
        self.v.copy_(F.normalize(w.t() @ self.u, dim=0, eps=_EPS))
        self.u.copy_(F.normalize(w @ self.v, dim=0, eps=_EPS))

    def sigma(self, w: Tensor) -> Tensor:
        """sigma(W) ~= u^T W v from the stored vectors (cloned, so later updates never touch this graph)."""
        return torch.dot(self.u.clone(), w @ self.v.clone())

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(weight.device.type, enabled=False):  # sigma in fp32 under bf16-mixed too
            w = weight.flatten(1)
            if self.training:
                self.power_iteration(w.detach())
            return weight / self.sigma(w)


class TransposedSpectralNorm(SpectralNorm):
    """``SpectralNorm`` of a transposed convolution, whose weight is stored (in, out, kh, kw): sigma is taken of
    the (out, in*kh*kw) matrix, as for a convolution (PyTorch's ``spectral_norm`` uses dim 1 there too)."""

    def __init__(self, weight: Tensor):
        super().__init__(weight.transpose(0, 1))

    def forward(self, weight: Tensor) -> Tensor:
        return super().forward(weight.transpose(0, 1)).transpose(0, 1)


class UnitRowNorm(nn.Module):
    """Parametrization W -> W with each output unit's row divided by its L2 norm: weight normalization
    (Salimans & Kingma 2016, eq. 2) with the gain g removed, as in Miyato et al. 2018, Sec. 4."""

    def forward(self, weight: Tensor) -> Tensor:
        norms = weight.flatten(1).norm(dim=1).clamp_min(_EPS)
        return weight / norms.view(-1, *([1] * (weight.dim() - 1)))


class ShiftOnlyNorm(nn.Module):
    """Batch or layer normalization without the learned scale gamma (Miyato et al. 2018, Sec. 4:
    "the gamma multipliers were removed"), followed by a learned per-channel shift beta.

    ``batch`` normalizes each channel over the batch (and positions), keeping running statistics for
    eval mode; ``layer`` normalizes each sample over all its features. Works on (N, C) and (N, C, H, W).
    """

    def __init__(self, kind: str, channels: int, momentum: float = 0.1):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"ShiftOnlyNorm kind must be 'batch' or 'layer', got {kind!r}")
        self.kind, self.momentum = kind, momentum
        self.shift = nn.Parameter(torch.zeros(channels))
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            x = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum)
        else:
            x = F.layer_norm(x, x.shape[1:])
        return x + self.shift.view(1, -1, *([1] * (x.dim() - 2)))


def has_parametrization(layer: nn.Module, kind: type[nn.Module]) -> bool:
    """Whether ``layer.weight`` is parametrized by a module of type ``kind``."""
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, kind) for p in layer.parametrizations.weight
    )


def raw_weight(layer: nn.Module) -> Tensor:
    """``layer``'s weight before any parametrization."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def weight_layers(module: nn.Module) -> list[nn.Module]:
    """The linear and convolution layers of ``module`` (the layers ``wrap`` acts on)."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def batch_norm_names(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` that normalize over the batch."""
    return [
        name for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, ShiftOnlyNorm) and m.kind == "batch")
    ]


def batch_coupling_names(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` whose output for one sample depends on the other samples of the
    batch: batch norm, and any module declaring ``couples_batch = True`` (minibatch discrimination)."""
    coupled = set(batch_norm_names(module))
    return [name for name, m in module.named_modules() if name in coupled or getattr(m, "couples_batch", False)]


def check_per_sample(discriminator: nn.Module, user: str) -> None:
    """One clear ``ValueError`` if ``discriminator`` couples the samples of a batch while ``user`` (a variant or
    regularizer) takes grad_x D(x_i) per sample: with coupling, row i of grad_x sum_j D(x_j) also holds the
    terms dD(x_j)/dx_i of the other samples, so the per-sample gradient (and its norm) is not defined."""
    if names := batch_coupling_names(discriminator):
        kind = type(discriminator.get_submodule(names[0])).__name__
        raise ValueError(
            f"model.discriminator: {user} takes D's input gradient per sample, which {names[0]!r} ({kind}) "
            "leaves undefined by coupling the samples of a batch; build D without batch norm (norm: none, "
            "weight or layer; batch_norm: false) and without minibatch discrimination"
        )


def spectral_norm(layer: nn.Module) -> nn.Module:
    """Register ``SpectralNorm`` on ``layer.weight`` (Miyato et al. 2018, Alg. 1); ``TransposedSpectralNorm`` on a
    transposed convolution's."""
    kind = TransposedSpectralNorm if isinstance(layer, nn.modules.conv._ConvTransposeNd) else SpectralNorm
    parametrize.register_parametrization(layer, "weight", kind(layer.weight))
    return layer


def wrap(layer: nn.Module, norm: str) -> nn.Module:
    """The weight layer, re-parametrized as ``norm`` asks (batch / layer norm act on features instead)."""
    check_norm(norm)
    if norm == "spectral":
        return spectral_norm(layer)
    if norm == "weight":
        parametrize.register_parametrization(layer, "weight", UnitRowNorm())
    return layer


def feature_norm(norm: str, channels: int) -> nn.Module:
    """The module that follows a hidden layer of ``channels`` features."""
    check_norm(norm)
    if norm in ("batch", "layer"):
        return ShiftOnlyNorm(norm, channels)
    return nn.Identity()

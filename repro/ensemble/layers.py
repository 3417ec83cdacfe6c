"""Ensemble layers: K independent copies of a layer whose parameters are stacked along a leading member dim.

Activations keep one layout everywhere, member-major along the batch: K members' batches of B samples
are one (K*B, ...) tensor, member k owning rows [k*B, (k+1)*B). Every parameter-free module and every
network's own forward code (views, ``flatten``, ``squeeze``, residual sums) then runs unchanged; only the
layers below know about K:

- linear: one batched matmul (``baddbmm``) over the K members;
- convolution / transposed convolution: one call per member (measured faster than one grouped
  convolution on this CPU; ``benchmarks/ensemble_engines.py``);
- batch norm: the members' channels side by side, (B, K*C), one ``F.batch_norm`` (per-channel
  statistics = per-member statistics);
- spectral / weight-row normalization: the parametrizations of ``repro.normalization`` on (K, out, in).

Parameter and buffer names equal the single layer's, each with shape (K, *single shape), so member k's
state dict is the stacked one indexed at k. ``stack_layers`` builds an ensemble layer from K built layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from repro.normalization import ShiftOnlyNorm, SpectralNorm, UnitRowNorm

__all__ = ["EnsembleLayer", "stack_layers", "is_stackable", "EnsembleError"]

_EPS = 1e-12


class EnsembleError(ValueError):
    """A model that cannot be trained as an ensemble; the message names the reason."""


def _stack(tensors: list[Tensor]) -> Tensor:
    return torch.stack([t.detach() for t in tensors]).clone()


def _members(x: Tensor, k: int) -> Tensor:
    """(K*B, ...) -> (K, B, ...) (a view)."""
    return x.view(k, x.shape[0] // k, *x.shape[1:])


def _channels_side_by_side(x: Tensor, k: int) -> Tensor:
    """(K*B, C, ...) -> (B, K*C, ...): member k's channels become channels k*C .. (k+1)*C - 1."""
    b = x.shape[0] // k
    return x.view(k, b, *x.shape[1:]).transpose(0, 1).reshape(b, k * x.shape[1], *x.shape[2:])


def _members_along_batch(y: Tensor, k: int) -> Tensor:
    """Inverse of ``_channels_side_by_side``."""
    b, c = y.shape[0], y.shape[1] // k
    return y.view(b, k, c, *y.shape[2:]).transpose(0, 1).reshape(k * b, c, *y.shape[2:])


class EnsembleLayer(nn.Module):
    """Base of the ensemble layers: ``members`` is K."""

    members: int


class _BatchedLinear(torch.autograd.Function):
    """y_k = x_k W_k^T + b_k for all k, with the backward products in ``nn.Linear``'s orientation
    (dW_k = g_k^T x_k, dx_k = g_k W_k): each member's gradients are then bit-identical to the single
    layer's (autograd's own ``bmm`` backward computes dW_k as (x_k^T g_k)^T, which rounds differently).
    The backward is made of differentiable ops, so double backward (gradient penalty) works."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if weight.shape[1] == 1:  # one output (a D head): as y^T = W x^T, which rounds as nn.Linear's gemv does
            xt = x.transpose(1, 2)
            y = torch.bmm(weight, xt) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, xt)
            return y.transpose(1, 2)
        w = weight.transpose(1, 2)
        return torch.bmm(x, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        return (torch.bmm(grad, weight) if need_x else None,
                torch.bmm(grad.transpose(1, 2), x) if need_w else None,
                grad.sum(1) if need_b else None)


class EnsembleLinear(EnsembleLayer):
    """K ``nn.Linear`` layers: y_k = x_k W_k^T + b_k for all k in one ``baddbmm``."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.members = len(layers)
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features
        self.weight = nn.Parameter(_stack([_raw(m) for m in layers]))
        self.bias = nn.Parameter(_stack([m.bias for m in layers])) if layers[0].bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        y = _BatchedLinear.apply(_members(x, self.members), self.weight, self.bias)
        return y.reshape(x.shape[0], self.out_features)


class _EnsembleConvBase(EnsembleLayer):
    """K convolutions of one kind, each member's samples through its own kernel."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        first = layers[0]
        self.members = len(layers)
        self.options = {"stride": first.stride, "padding": first.padding, "dilation": first.dilation,
                        "groups": first.groups}
        self.weight = nn.Parameter(_stack([_raw(m) for m in layers]))
        self.bias = nn.Parameter(_stack([m.bias for m in layers])) if first.bias is not None else None

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        xs = _members(x, self.members)
        w = self.weight
        outs = [self.conv(xs[i], w[i], None if self.bias is None else self.bias[i]) for i in range(self.members)]
        return torch.cat(outs)


class EnsembleConv2d(_EnsembleConvBase):
    """K ``nn.Conv2d`` layers (zero padding)."""

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, **self.options)


class EnsembleConvTranspose2d(_EnsembleConvBase):
    """K ``nn.ConvTranspose2d`` layers (fixed ``output_padding``)."""

    def __init__(self, layers: list[nn.ConvTranspose2d]):
        super().__init__(layers)
        self.options["output_padding"] = layers[0].output_padding

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        o = self.options
        return F.conv_transpose2d(x, weight, bias, o["stride"], o["padding"], o["output_padding"], o["groups"],
                                  o["dilation"])


class EnsembleBatchNorm(EnsembleLayer):
    """K ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` layers with running statistics (Ioffe & Szegedy 2015):
    each member normalizes with its own batch statistics and keeps its own running averages."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        first = layers[0]
        if not first.track_running_stats:
            raise EnsembleError(f"{type(first).__name__} without running statistics is not supported in an ensemble")
        self.members, self.eps, self.momentum = len(layers), first.eps, first.momentum
        if first.affine:
            self.weight = nn.Parameter(_stack([m.weight for m in layers]))
            self.bias = nn.Parameter(_stack([m.bias for m in layers]))
        else:
            self.weight, self.bias = None, None
        self.register_buffer("running_mean", _stack([m.running_mean for m in layers]))
        self.register_buffer("running_var", _stack([m.running_var for m in layers]))
        self.register_buffer("num_batches_tracked", _stack([m.num_batches_tracked for m in layers]))

    def forward(self, x: Tensor) -> Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked[0])
        y = F.batch_norm(
            _channels_side_by_side(x, self.members), self.running_mean.view(-1), self.running_var.view(-1),
            None if self.weight is None else self.weight.view(-1), None if self.bias is None else self.bias.view(-1),
            self.training, factor, self.eps,
        )
        return _members_along_batch(y, self.members)


class EnsembleShiftOnlyNorm(EnsembleLayer):
    """K ``repro.normalization.ShiftOnlyNorm`` layers (batch or layer normalization without gamma, then beta)."""

    def __init__(self, layers: list[ShiftOnlyNorm]):
        super().__init__()
        first = layers[0]
        self.members, self.kind, self.momentum = len(layers), first.kind, first.momentum
        self.shift = nn.Parameter(_stack([m.shift for m in layers]))
        if self.kind == "batch":
            self.register_buffer("running_mean", _stack([m.running_mean for m in layers]))
            self.register_buffer("running_var", _stack([m.running_var for m in layers]))

    def forward(self, x: Tensor) -> Tensor:
        k = self.members
        if self.kind == "batch":
            y = F.batch_norm(_channels_side_by_side(x, k), self.running_mean.view(-1), self.running_var.view(-1),
                             None, None, self.training, self.momentum)
            x = _members_along_batch(y, k)
        else:
            x = F.layer_norm(x, x.shape[1:])
        xs = _members(x, k)
        return (xs + self.shift.view(k, 1, -1, *([1] * (x.dim() - 2)))).view(x.shape)


class EnsembleSpectralNorm(SpectralNorm):
    """``SpectralNorm`` (Miyato et al. 2018, Alg. 1) of K weights at once: u (K, out), v (K, in*kh*kw),
    one power iteration per training forward for every member, sigma_k = u_k^T W_k v_k."""

    def __init__(self, norms: list[SpectralNorm]):
        nn.Module.__init__(self)
        self.register_buffer("u", _stack([n.u for n in norms]))
        self.register_buffer("v", _stack([n.v for n in norms]))

    @torch.no_grad()
    def power_iteration(self, w: Tensor) -> None:
        self.v.copy_(F.normalize(torch.bmm(w.transpose(1, 2), self.u.unsqueeze(2)).squeeze(2), dim=1, eps=_EPS))
        self.u.copy_(F.normalize(torch.bmm(w, self.v.unsqueeze(2)).squeeze(2), dim=1, eps=_EPS))

    def sigma(self, w: Tensor) -> Tensor:
        wv = torch.bmm(w, self.v.clone().unsqueeze(2)).squeeze(2)
        return (self.u.clone() * wv).sum(1)

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.flatten(2)
            if self.training:
                self.power_iteration(w.detach())
            return weight / self.sigma(w).view(-1, *([1] * (weight.dim() - 1)))


class EnsembleUnitRowNorm(UnitRowNorm):
    """``UnitRowNorm`` of K weights: each member's output rows scaled to unit L2 norm."""

    def forward(self, weight: Tensor) -> Tensor:
        norms = weight.flatten(2).norm(dim=2).clamp_min(_EPS)
        return weight / norms.view(*norms.shape, *([1] * (weight.dim() - 2)))


def _raw(layer: nn.Module) -> Tensor:
    """The layer's weight before any parametrization."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def _stack_parametrizations(layers: list[nn.Module], ensemble: nn.Module) -> None:
    """Register on ``ensemble.weight`` the stacked versions of the members' weight parametrizations."""
    if not parametrize.is_parametrized(layers[0], "weight"):
        return
    chains = [list(m.parametrizations.weight) for m in layers]
    for depth, p in enumerate(chains[0]):
        if type(p) is SpectralNorm:
            stacked: nn.Module = EnsembleSpectralNorm([c[depth] for c in chains])
        elif type(p) is UnitRowNorm:
            stacked = EnsembleUnitRowNorm()
        else:
            raise EnsembleError(f"weight parametrization {type(p).__name__} is not supported in an ensemble "
                                "(supported: SpectralNorm, UnitRowNorm)")
        # unsafe: no trial forward (it would run a power iteration on the stacked u, v)
        parametrize.register_parametrization(ensemble, "weight", stacked, unsafe=True)


_STACKERS: dict[type, type[EnsembleLayer]] = {
    nn.Linear: EnsembleLinear,
    nn.Conv2d: EnsembleConv2d,
    nn.ConvTranspose2d: EnsembleConvTranspose2d,
    nn.BatchNorm1d: EnsembleBatchNorm,
    nn.BatchNorm2d: EnsembleBatchNorm,
    ShiftOnlyNorm: EnsembleShiftOnlyNorm,
}


def _kind(module: nn.Module) -> type:
    return parametrize.type_before_parametrizations(module)


def is_stackable(module: nn.Module) -> bool:
    """Whether ``stack_layers`` knows ``module``'s type (parametrized or not)."""
    return _kind(module) in _STACKERS


def stack_layers(layers: list[nn.Module]) -> EnsembleLayer:
    """One ensemble layer whose member k is ``layers[k]`` (its weights, buffers and parametrizations).

    Raises ``EnsembleError`` for a layer type or option that has no ensemble version."""
    first = layers[0]
    kind = _STACKERS.get(_kind(first))
    if kind is None:
        raise EnsembleError(f"layer type {_kind(first).__name__} has no ensemble version "
                            f"(supported: {', '.join(t.__name__ for t in _STACKERS)})")
    if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)) and first.padding_mode != "zeros":
        raise EnsembleError(f"{type(first).__name__} with padding_mode={first.padding_mode!r} is not supported "
                            "in an ensemble (only 'zeros')")
    ensemble = kind(layers)
    _stack_parametrizations(layers, ensemble)
    return ensemble.train(first.training)

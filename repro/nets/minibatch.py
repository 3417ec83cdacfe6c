"""Minibatch discrimination (Salimans et al. 2016, Sec. 3.2) in front of any discriminator's head.

With f(x_i) in R^A the discriminator's last hidden layer and T in R^(A x B x C):
M_i = f(x_i) T in R^(B x C),  c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_L1),  o(x_i)_b = sum_{j != i} c_b(x_i, x_j),
and D's head sees [f(x_i), o(x_i)] in R^(A + B). Defaults B = 100 kernels of C = 5 dimensions (the CIFAR-10
code, ``train_cifar_minibatch_discrimination.py``). Every call is its own minibatch: the loop calls D on the
real and on the fake batch separately (as the released code does), so o compares real with real and fake with
fake; under DDP each rank's per-device batch is the minibatch.

The released code's ``MinibatchLayer`` also weight-normalizes T (a learned log-scale per kernel dimension,
data-based initialisation) and holds a learned per-kernel bias; this module follows the paper's formula: a
plain T (a bias-free linear map, initialised N(0, 0.05^2) as in that code) and no bias.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from repro.nets.base import Discriminator
from repro.normalization import wrap

__all__ = ["minibatch_features", "MinibatchDiscrimination", "MinibatchDiscriminator"]

_NEG_LOG2E = -math.log2(math.e)  # exp(-l) = exp2(-l log2 e): torch's exp2 is ~2.6x cheaper than exp on a CPU
_CHUNK_ELEMENTS = 1 << 18  # per work buffer on a CPU (1 MiB of float32): a chunk of kernels stays in L2


def _partners(x: Tensor, h: int) -> Tensor:
    """x (..., n) -> a view (..., h, n) whose [..., k, i] is x[..., (i + k + 1) % n]: sample i's k-th partner."""
    xx = torch.cat([x, x[..., :h]], dim=-1)
    return xx.as_strided((*x.shape[:-1], h, x.shape[-1]), (*xx.stride()[:-1], 1, 1), xx.storage_offset() + 1)


def _band(z: Tensor, n: int) -> Tensor:
    """z (b, h, n + h) -> a view (b, h, n) whose [b, k, i] is z[b, k, i + k + 1]: row k shifted onto the partner."""
    b, h, width = z.shape
    return z.as_strided((b, h, n), (z.stride(0), width + 1, 1), z.storage_offset() + 1)


def _add_partner_sums(out: Tensor, z: Tensor, n: int) -> None:
    """out (b, n) += sum over pairs of the value at their partner: z's column sums (mod n) over the rows
    k < (n - 1) // 2 (for even n the last row, offset n / 2, already holds each pair at both of its samples)."""
    sums = z[:, : (n - 1) // 2].sum(dim=1)
    out += sums[:, :n]
    out[:, : sums.shape[1] - n] += sums[:, n:]


def _chunk(kernels: int, h: int, n: int, device: torch.device) -> int:
    """Kernels per pass: all on an accelerator, a cache-sized chunk on a CPU."""
    return kernels if device.type != "cpu" else max(1, min(kernels, _CHUNK_ELEMENTS // max(1, h * n)))


def _features_autograd(m: Tensor) -> Tensor:
    """The same o(x_i)_b by plain autograd ops, twice differentiable: the path under ``create_graph=True``."""
    per_dim = m.permute(2, 1, 0)  # (C, B, n)
    l1 = sum((x.unsqueeze(2) - x.unsqueeze(1)).abs() for x in per_dim)  # (B, n, n)
    return torch.exp(-l1).sum(dim=2).t() - 1.0  # the j = i term is exp(0) = 1


class _PairwiseL1Kernels(torch.autograd.Function):
    """o (n, B) from M (n, B, C), over each unordered pair once (Salimans et al. 2016, Sec. 3.2).

    Pairs are (i, i + k + 1 mod n), k < h = n // 2: every unordered pair once (for even n the offset n / 2 twice,
    once at each sample). Forward: K_bki = exp(-sum_c |m_ibc - m_jbc|) (C loop outermost, contiguous (b, h, n)
    buffers), o_ib = sum over i's rows + sum over the rows where i is the partner. Backward, for each pair
    d K_ij / d m_ibc = -K_ij sign(m_ibc - m_jbc) = -d K_ij / d m_jbc, so with W = K (g_i + g_j):
    grad_m[i, b, c] = -sum_{j != i} W_bij sign(m_ibc - m_jbc), per c, without an (n, n, B, C) tensor.
    """

    @staticmethod
    def forward(ctx, m: Tensor) -> Tensor:
        n, kernels, dims = m.shape
        h = n // 2
        x = m.permute(2, 1, 0).contiguous()  # (C, B, n)
        partners = _partners(x, h)
        k_all = x.new_empty((kernels, h, n))
        out = x.new_empty((kernels, n))
        step = _chunk(kernels, h, n, m.device)
        buf, z = x.new_empty((step, h, n)), x.new_zeros((step, h, n + h))  # z: zero outside its band
        for s in range(0, kernels, step):
            e = min(step, kernels - s)
            k, bufe, ze = k_all[s : s + e], buf[:e], z[:e]
            torch.sub(x[0, s : s + e].unsqueeze(1), partners[0, s : s + e], out=k).abs_()
            for c in range(1, dims):  # sum_c |m_ibc - m_jbc|
                torch.sub(x[c, s : s + e].unsqueeze(1), partners[c, s : s + e], out=bufe)
                k.add_(bufe.abs_())
            k.mul_(_NEG_LOG2E).exp2_()
            torch.sum(k, dim=1, out=out[s : s + e])
            _band(ze, n).copy_(k)
            _add_partner_sums(out[s : s + e], ze, n)
        ctx.save_for_backward(m, x, k_all)
        return out.t()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        m, x, k_all = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True (e.g. a gradient penalty through D): differentiable path
            return torch.autograd.grad(_features_autograd(m), m, grad_out, create_graph=True)[0]
        dims, kernels, n = x.shape
        h = n // 2
        g = grad_out.t().contiguous()  # (B, n)
        g_partners, partners = _partners(g, h), _partners(x, h)
        grad = torch.empty_like(x)
        step = _chunk(kernels, h, n, x.device)
        w, buf, z = x.new_empty((step, h, n)), x.new_empty((step, h, n)), x.new_zeros((step, h, n + h))
        for s in range(0, kernels, step):
            e = min(step, kernels - s)
            we, bufe, ze = w[:e], buf[:e], z[:e]
            torch.add(g[s : s + e].unsqueeze(1), g_partners[s : s + e], out=we).mul_(k_all[s : s + e])  # W
            for c in range(dims):
                torch.sub(x[c, s : s + e].unsqueeze(1), partners[c, s : s + e], out=bufe)
                torch.mul(bufe.sign_(), we, out=_band(ze, n))  # W_ij sign(m_ic - m_jc) at row i, column j
                gc = grad[c, s : s + e]
                torch.sum(_band(ze, n), dim=1, out=gc).neg_()  # i's own rows
                _add_partner_sums(gc, ze, n)  # the rows where i is the partner j: the sign flips
        return grad.permute(2, 1, 0)


def minibatch_features(m: Tensor) -> Tensor:
    """o(x_i)_b = sum_{j != i} exp(-||M_i,b - M_j,b||_1) for M of shape (n, B, C); returns (n, B).

    Exact and never materialises the (n, n, B, C) differences: each unordered pair is evaluated once, in
    cache-sized chunks of kernels, with a hand-written backward (``_PairwiseL1Kernels``). At n = 256, B = 100,
    C = 5, forward + backward on one CPU thread: 123-130 ms -> 26-33 ms (best-median of 15, alternating) against
    the former per-kernel ``torch.cdist(p=1)`` path, 3.9-4.9x, measured under load ~4 on 2 cores.
    Under ``create_graph=True`` (a gradient penalty through D) the backward is a plain-autograd one, twice
    differentiable.
    """
    if m.dim() != 3:
        raise ValueError(f"minibatch_features needs M of shape (n, B, C), got {tuple(m.shape)}")
    return _PairwiseL1Kernels.apply(m)


class MinibatchDiscrimination(nn.Module):
    """x (n, A) -> o (n, B): the kernels T as a bias-free linear map A -> B*C (wrapped by ``norm``)."""

    couples_batch = True  # each output depends on the whole batch (a seed ensemble refuses it)

    def __init__(self, in_features: int, kernels: int = 100, kernel_dim: int = 5, norm: str = "none"):
        super().__init__()
        if kernels < 1 or kernel_dim < 1:
            raise ValueError(f"minibatch discrimination needs kernels >= 1 and kernel_dim >= 1, got {kernels}, {kernel_dim}")
        self.kernels, self.kernel_dim = kernels, kernel_dim
        linear = nn.Linear(in_features, kernels * kernel_dim, bias=False)
        nn.init.normal_(linear.weight, std=0.05)
        self.T = wrap(linear, norm)

    def forward(self, f: Tensor) -> Tensor:
        return minibatch_features(self.T(f).view(len(f), self.kernels, self.kernel_dim))


class MinibatchDiscriminator(Discriminator):
    """``discriminator`` with minibatch discrimination before a new head: out = head([f(x), o(f(x))]).

    ``discriminator`` must expose ``features`` / ``feature_dim`` (every repro D does); its own head is
    replaced. ``norm`` wraps T and the new head (e.g. ``spectral``).
    """

    def __init__(self, discriminator: nn.Module, kernels: int = 100, kernel_dim: int = 5, norm: str = "none"):
        super().__init__()
        for attr in ("features", "feature_dim"):
            if not hasattr(discriminator, attr):
                raise ValueError(f"minibatch discrimination needs a discriminator exposing `{attr}` (repro.nets.*)")
        discriminator.head = None  # replaced by the head over [f, o]
        self.inner = discriminator
        self.minibatch = MinibatchDiscrimination(discriminator.feature_dim, kernels, kernel_dim, norm)
        self.feature_dim = discriminator.feature_dim + kernels
        self.head = wrap(nn.Linear(self.feature_dim, 1), norm)

    def features(self, x: Tensor) -> Tensor:
        f = self.inner.features(x)
        return torch.cat([f, self.minibatch(f)], dim=1)

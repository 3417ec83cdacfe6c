"""Virtual batch normalization for the generator (Salimans et al. 2016, Sec. 3.5).

Each example is normalized with statistics that mix its own with those of a reference batch chosen once
and fixed at the start of training; the reference batch itself is normalized with its own statistics.
With a reference batch of B examples, per feature (and, for images, over the spatial positions):

    mu(x)   = 1/(B+1) * mean(x)   + B/(B+1) * mu_ref,
    mu2(x)  = 1/(B+1) * mean(x^2) + B/(B+1) * mu2_ref,     var(x) = mu2(x) - mu(x)^2,
    VBN(x)  = gamma * (x - mu(x)) / sqrt(var(x) + eps) + beta,

the weighting of the Improved-GAN ImageNet code's ``VBN`` (``new_coeff = 1 / (B + 1)``). The reference is
a fixed batch of latents (a buffer, so it is saved in checkpoints and identical on every DDP rank); every
forward first passes it through the current G to get mu_ref, mu2_ref at each layer (gradients flow through
them, as in that code), so one G forward costs two passes. Eval and training compute the same function.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["VirtualBatchNorm", "VirtualBatchNormGenerator"]


class VirtualBatchNorm(nn.Module):
    """A BatchNorm{1,2}d replacement; ``reference`` statistics are set by ``VirtualBatchNormGenerator``."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps = bn.eps
        self.weight, self.bias = (bn.weight, bn.bias) if bn.affine else (None, None)
        self.reference: tuple[Tensor, Tensor, int] | None = None  # (mu_ref, mu2_ref, B)
        self.recording = False

    def forward(self, x: Tensor) -> Tensor:
        spatial = tuple(range(2, x.dim()))
        if self.recording:  # the reference batch: its own statistics, kept for the examples that follow
            mean, mean_sq = x.mean(dim=(0, *spatial)), x.square().mean(dim=(0, *spatial))
            self.reference = (mean, mean_sq, len(x))
            mean, mean_sq = mean.unsqueeze(0), mean_sq.unsqueeze(0)  # (1, C): one set for the whole batch
        elif self.reference is None:
            raise RuntimeError("VirtualBatchNorm runs inside VirtualBatchNormGenerator (no reference statistics)")
        else:  # each example: its own statistics (over positions) mixed with the reference's
            ref_mean, ref_sq, b = self.reference
            own_mean = x.mean(dim=spatial) if spatial else x
            own_sq = x.square().mean(dim=spatial) if spatial else x.square()
            mean = own_mean / (b + 1) + ref_mean * (b / (b + 1))
            mean_sq = own_sq / (b + 1) + ref_sq * (b / (b + 1))
        per_position = (...,) + (None,) * len(spatial)
        mean, var = mean[per_position], (mean_sq - mean.square())[per_position]
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight[per_position] + self.bias[per_position]
        return out


class VirtualBatchNormGenerator(nn.Module):
    """``generator`` with every batch-norm layer replaced by virtual batch norm over a fixed reference batch.

    Args:
        generator: any G with batch norm (``z_dim`` attribute); its BN scale / shift become VBN's.
        reference_size: B, the number of fixed reference latents (the ImageNet code uses its batch size).
        seed: seed of the reference latents (drawn from their own generator: the global RNG is untouched).
    """

    def __init__(self, generator: nn.Module, reference_size: int = 64, seed: int = 0):
        super().__init__()
        if reference_size < 1:
            raise ValueError(f"VirtualBatchNormGenerator.reference_size must be >= 1, got {reference_size}")
        if not hasattr(generator, "z_dim"):
            raise ValueError("VirtualBatchNormGenerator needs a generator with a z_dim attribute")
        self.vbn: list[VirtualBatchNorm] = []
        for parent in list(generator.modules()):
            for name, child in parent.named_children():
                if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    layer = VirtualBatchNorm(child)
                    setattr(parent, name, layer)
                    self.vbn.append(layer)
        if not self.vbn:
            raise ValueError("VirtualBatchNormGenerator: the generator has no batch-norm layer to replace "
                             "(use a generator with batch norm, e.g. MLPGenerator batch_norm: true)")
        self.generator, self.z_dim = generator, generator.z_dim
        z = torch.randn(reference_size, generator.z_dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("reference_z", z)

    def forward(self, z: Tensor) -> Tensor:
        for layer in self.vbn:
            layer.recording = True
        try:
            self.generator(self.reference_z)  # sets every layer's reference statistics
        finally:
            for layer in self.vbn:
                layer.recording = False
        try:
            return self.generator(z)
        finally:
            for layer in self.vbn:
                layer.reference = None  # do not keep the reference graph alive between calls

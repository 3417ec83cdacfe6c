"""Generator conditioning (Odena et al. 2018, Sec. 3): the spectrum of M_z = J_z^T J_z, J_z = dG(z)/dz.

The Jacobian of every latent sample is computed in one batched call with ``torch.func`` (forward-mode
``jacfwd`` when the latent is smaller than the output, reverse-mode ``jacrev`` otherwise, vectorized
over samples by ``vmap``), never one backward per output pixel. The generator is evaluated in eval
mode, so batch norm uses running statistics and G is a per-sample function. The eigenvalues of M_z are
the squared singular values of J_z; they are taken as such (``svdvals`` in float64, which never turns
a tiny eigenvalue negative), so the condition number lambda_max / lambda_min = (sigma_max / sigma_min)^2,
and its log is the quantity Odena et al. trace over training.

When the latent is larger than the output (d > D), J_z is D x d and J^T J (d x d) has rank at most D:
it is singular and its condition number is infinite. ``svdvals`` returns only min(D, d) singular
values, so the ratio of the largest to the smallest of those would be a finite, wrong number;
``condition_numbers`` returns ``inf`` for every such sample instead (and ``repro fit`` refuses to
trace the conditioning of such a generator, ``repro.preflight.check_conditioning``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacfwd, jacrev, vmap

__all__ = ["generator_jacobian", "condition_numbers", "log_condition_stats"]


def generator_jacobian(generator: nn.Module, z: Tensor, chunk_size: int | None = 8) -> Tensor:
    """J_z for each row of ``z``: shape (K, output size, latent size)."""
    params = {k: v.detach() for k, v in generator.named_parameters()}
    buffers = {k: v.detach() for k, v in generator.named_buffers()}

    def g(one: Tensor) -> Tensor:
        return functional_call(generator, (params, buffers), (one.unsqueeze(0),)).flatten()

    was_training = generator.training
    generator.eval()
    try:
        out_dim = g(z[0]).numel()
        jac = jacfwd(g) if z.shape[1] <= out_dim else jacrev(g)
        return vmap(jac, chunk_size=chunk_size)(z.detach())
    finally:
        generator.train(was_training)


def condition_numbers(jacobians: Tensor) -> Tensor:
    """lambda_max / lambda_min of J^T J for each Jacobian (K, D, d) -> (K,), in float64; ``inf`` when
    d > D (J^T J is then singular)."""
    if jacobians.shape[-1] > jacobians.shape[-2]:
        return torch.full((len(jacobians),), math.inf, dtype=torch.float64)
    s = torch.linalg.svdvals(jacobians.double())  # descending; eigenvalues of J^T J are s^2
    return (s[:, 0] / s[:, -1]).square()


def log_condition_stats(generator: nn.Module, z: Tensor) -> dict[str, float]:
    """Mean and standard deviation over the samples of log(lambda_max / lambda_min) (Odena et al. 2018)."""
    log_cond = condition_numbers(generator_jacobian(generator, z)).log()
    return {"log_cond_mean": float(log_cond.mean()), "log_cond_std": float(log_cond.std()) if len(z) > 1 else 0.0}

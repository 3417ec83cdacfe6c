"""The exact W1 between two batches as a linear program (WGAN-TS's step 1, Liu, Gu & Samaras 2018, eq. 8-9),
shared by the WGAN-TS variant (``repro.variants.wgants``) and the batch-W1 diagnostic (``repro.callbacks.w1``).

``exact_w1`` solves  max (1/n) sum phi_i - (1/m) sum psi_j  s.t.  phi_i - psi_j <= c_ij  for the uniform empirical
measures of the batches with POT's ``ot.emd`` (a network simplex on the float64 cost matrix: exact, no tolerance
parameter; optimality is checked by its result code). Its cost is measured in ``repro.variants.wgants``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["TransportSolution", "exact_w1", "l1_cost"]


def l1_cost(x: Tensor, y: Tensor) -> Tensor:
    """c_ij = ||x_i - y_j||_1 over flattened samples, (n, m)."""
    return torch.cdist(x.flatten(1), y.flatten(1), p=1)


@dataclass
class TransportSolution:
    """The exact W1 LP between two uniform empirical measures."""

    value: float  # the optimum: W1 of the two batches
    phi: Tensor  # (n,) real potentials
    psi: Tensor  # (m,) fake potentials; phi_i - psi_j <= c_ij
    plan: Tensor  # (n, m) optimal transport plan, rows sum to 1/n
    match: Tensor  # (m,) pi(j) = the real sample fake j is transported from


def exact_w1(cost: Tensor, max_iter: int = 1_000_000) -> TransportSolution:
    """Solve step 1 for a cost matrix (real x fake) with ``ot.emd`` in float64; potentials centred to sum 0."""
    import ot

    c = cost.detach().to("cpu", torch.float64).numpy()
    n, m = c.shape
    plan, log = ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), c, numItermax=max_iter, log=True)
    if log["result_code"] != 1:
        raise RuntimeError(f"the exact W1 LP was not solved to optimality: {log['warning']}")
    # POT's duals satisfy u_i + v_j <= c_ij with value sum(a u) + sum(b v): phi = u, psi = -v
    phi, psi = torch.from_numpy(log["u"]), -torch.from_numpy(log["v"])
    offset = (phi.sum() + psi.sum()) / (n + m)
    plan_t = torch.from_numpy(plan)
    return TransportSolution(
        value=float(log["cost"]), phi=phi - offset, psi=psi - offset, plan=plan_t, match=plan_t.argmax(0)
    )

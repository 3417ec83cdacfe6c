"""WGAN-TS (Liu, Gu & Samaras, "A Two-Step Computation of the Exact GAN Wasserstein Distance", ICML 2018,
Alg. 1; the authors' code harryliew/WGAN-TS).

Each D update, on a real batch x (n) and a fake batch y = G(z) (m):
1. Step 1 (eq. 8-9): the exact W1 of the two empirical measures with cost c(x, y) = ||x - y||_1 on
   flattened samples, as the linear program  max (1/n) sum phi_i - (1/m) sum psi_j  s.t.  phi_i - psi_j <= c_ij,
   solved by POT's ``ot.emd`` (a network simplex on the float64 cost matrix: exact, no tolerance
   parameter; optimality is reported by its result code and checked here). Its dual potentials, centred
   so that sum(phi) + sum(psi) = 0 as in the authors' code, are the regression targets; the optimal plan
   gives each fake y_j its partner x_pi(j) (argmax of column j; for n = m the plan is a permutation).
2. Step 2 (eq. 10-11): ``regression_steps`` optimizer steps of D on the same batch on
   MSE([D(x); D(y)], [phi; psi]) + ot_weight * mean_j ||grad_y D(y_j) - sign(x_pi(j) - y_j)||^2.
3. Optional weight scaling (Sec. 4.3, off by default as in the code): with s = max over pairs with
   c_ij > 0 of (D(x_i) - D(y_j)) / c_ij, if s > 1 every D parameter is multiplied by s^(-1/L), L = D's
   number of linear / conv layers. This divides D by exactly s when D is positively homogeneous
   (no biases, ReLU-type activations) and approximately otherwise; D's spectral norm, if any, undoes it.
G then maximizes mean D(G(z)) (the Wasserstein G loss).

Cost of step 1 (measured on this project's 2-core CPU under load average ~5, MNIST-sized 784-d samples):
``ot.emd`` takes 0.27 ms at n = m = 64 (4,096 constraints), 1.0 ms at 128, 21 ms at 256 and 129 ms at 512
(between n^2 and n^3 in practice); the L1 cost matrix, O(n m d), costs more below n = 512 (2.5 ms at 64).
Both are far below the 5 regression steps with a double backward at image sizes. One forward of D(y) serves the
MSE and the regularizer of a regression step (a separate forward for each cost 1.3x more: 240 against 185 ms per step
of the MNIST critic, cnn28_d at batch 64, one thread, alternating blocks, load 1.9-2.9; one forward of the
concatenated batch cost 1.5x more, its double backward spanning the real half too).

Under DDP each rank solves the LP of its own batches (n = the per-device batch) and the regression's
gradients are averaged: an estimate over per-rank batches, not the LP of the global batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.metrics.transport import TransportSolution, exact_w1, l1_cost
from repro.normalization import check_per_sample
from repro.variants.base import Betas, GANModule

__all__ = ["WGANTS", "TransportSolution", "exact_w1", "l1_cost", "lipschitz_ratio", "scale_weights"]


def lipschitz_ratio(d_real: Tensor, d_fake: Tensor, cost: Tensor) -> Tensor:
    """max over pairs with c_ij > 0 of (D(x_i) - D(y_j)) / c_ij."""
    diff = d_real[:, None] - d_fake[None, :]
    positive = cost > 0
    return (diff[positive] / cost[positive]).max()


def weight_layers(net: nn.Module) -> int:
    """L: the number of linear and convolution layers of ``net``."""
    return sum(isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) for m in net.modules())


@torch.no_grad()
def scale_weights(net: nn.Module, ratio: float, layers: int) -> bool:
    """If ``ratio`` > 1, multiply every parameter of ``net`` by ratio^(-1/layers); returns whether it did."""
    if ratio <= 1.0:
        return False
    torch._foreach_mul_(list(net.parameters()), ratio ** (-1.0 / layers))
    return True


class WGANTS(GANModule, name="wgants"):
    """The two-step WGAN: exact batch W1 LP, then regression of D onto its potentials.

    Args:
        regression_steps: D optimizer steps per LP on the same batch (the code's DOptIters = 5).
        ot_weight: lambda of the optimal-transport regularizer (the code's LAMBDA = 10; 0 turns it off); > 0
            refuses a D that couples the samples (batch norm, minibatch discrimination).
        weight_scaling: apply the Sec. 4.3 weight scaling after each D update (the code's ``--ws``, off).
        n_dis: D updates (each one LP) per G update (the code's Diters = 1).
        lr_g, lr_d, betas_g, betas_d: Adam settings (the code: 1e-4, (0.5, 0.999) for both).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        regression_steps: int = 5,
        ot_weight: float = 10.0,
        weight_scaling: bool = False,
        n_dis: int = 1,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        betas_g: Betas = (0.5, 0.999),
        betas_d: Betas = (0.5, 0.999),
        **kwargs: Any,
    ):
        if regression_steps < 1:
            raise ValueError(f"model.regression_steps must be >= 1, got {regression_steps}")
        if not ot_weight >= 0:
            raise ValueError(f"model.ot_weight must be >= 0, got {ot_weight}")
        if ot_weight > 0:  # eq. 11 compares grad_y D(y_j) with each sample's own direction
            check_per_sample(discriminator, "WGANTS (ot_weight > 0)")
        if kwargs.get("d_regularizers"):
            raise ValueError("model.d_regularizers do not apply to WGAN-TS (D regresses onto the LP potentials); remove them")
        super().__init__(
            generator, discriminator, loss="wasserstein", n_dis=n_dis, lr_g=lr_g, lr_d=lr_d,
            betas_g=betas_g, betas_d=betas_d, **kwargs,
        )
        self.regression_steps, self.ot_weight, self.weight_scaling = regression_steps, ot_weight, weight_scaling
        self.layers = weight_layers(discriminator)
        if weight_scaling and self.layers == 0:
            raise ValueError("model.weight_scaling needs a discriminator with linear or conv layers")

    def regression_loss(self, real: Tensor, fake: Tensor, target: Tensor, direction: Tensor) -> Tensor:
        """Step 2's loss: MSE([D(x); D(y)], [phi; psi]) + ot_weight * mean_j ||grad_y D(y_j) - direction_j||^2
        (eq. 10-11); one forward of D(y) serves both terms."""
        y = fake.detach().requires_grad_(self.ot_weight > 0)
        d_fake = self.discriminate(y)
        loss = F.mse_loss(torch.cat([self.discriminate(real), d_fake]), target)
        if self.ot_weight > 0:
            (grad,) = torch.autograd.grad(d_fake.sum(), y, create_graph=True)
            loss = loss + self.ot_weight * (grad - direction).flatten(1).square().sum(1).mean()
        return loss

    def d_step(self, real: Tensor, opt_d: Any) -> Tensor:
        fake = self.d_fakes(len(real))
        real_in = self.real_input(real)
        cost = l1_cost(real_in, fake)
        sol = exact_w1(cost)
        target = torch.cat([sol.phi, sol.psi]).to(real_in)
        direction = torch.sign(real_in[sol.match.to(real.device)] - fake)
        for _ in range(self.regression_steps):
            loss = self.regression_loss(real_in, fake, target, direction)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self.step_uncounted(opt_d)
        with torch.no_grad():
            d_real, d_fake = self.discriminate(real_in), self.discriminate(fake)
            ratio = float(lipschitz_ratio(d_real, d_fake, cost))
            if self.weight_scaling:
                scale_weights(self.discriminator, ratio, self.layers)
        self._w1 = {"w1_lp": sol.value, "w1_critic": float(d_real.mean() - d_fake.mean()), "lipschitz_ratio": ratio}
        self.after_d_step(real, fake)
        return loss.detach()

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        super().training_step(batch, batch_idx)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({f"train/{k}": v for k, v in self._w1.items()})

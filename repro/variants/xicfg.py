"""xICFG (Johnson & Zhang, "Composite Functional Gradient Learning of Generative Adversarial Models",
ICML 2018, Alg. 3; the authors' code riejohnson/cfg-gan-pt, TPAMI version).

The generator is an approximator G~ followed by T functional-gradient steps (eq. 1 with g = s * grad D,
eq. 4, s = 1):  G_0 = G~,  G_t(z) = G_{t-1}(z) + eta * grad_x D_t(G_{t-1}(z)),  t = 1..T,
where D_t is a frozen snapshot of the discriminator taken as it trains within the stage.

One training step (``global_step``) is one *stage*:
1. for t = 1..T: U updates of D on the logistic loss (eq. 3), each on a fresh real batch against fakes
   G_{t-1}(z) (pushed by the snapshots D_1..D_{t-1} of this stage), then D_t <- copy of D;
2. the refit ("approximate"): N = ``refit_batches`` x batch pairs (z, G_T(z)), then ``refit_epochs``
   epochs of 0.5 * ||G~(z) - target||^2 per sample on G~ (warm start, a fresh optimizer state each stage),
   the learning rate x ``refit_lr_decay`` whenever an epoch's mean loss rises (at most ``refit_max_decays``
   times).
Before the first stage G~ is fitted the same way to clamp(z W, -1, 1), W ~ N(0, ``init_std``^2).
A sample is G~(z) pushed by the last stage's T snapshots: T gradient evaluations of D.

As in the authors' code, G~ runs in eval mode whenever it makes fakes, targets or samples (train mode
only while refitted), and the snapshots run in training mode (batch statistics if D has batch norm: the push
is then grad_x of sum_j D_t(x_j), row i including the other samples' terms, as the authors' code computes it;
unlike GN-GAN or a gradient penalty, nothing here needs the per-sample gradient, so a coupling D is accepted).
Under DDP the D and refit gradients are averaged over the ranks and the refit's epoch loss is
averaged before the learning-rate decision, so every rank holds the same G~, D and snapshots.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from repro.variants.base import GANModule

__all__ = ["XICFG", "functional_gradient_push"]


def functional_gradient_push(x: Tensor, critics: Iterable[nn.Module], eta: float) -> Tensor:
    """x pushed by each critic in turn: x <- x + eta * grad_x D(x) (eq. 1 with eq. 4, s = 1); detached.
    Works inside ``torch.inference_mode`` too (the image metrics sample there): the gradients are taken outside it."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # a normal tensor, also when x was made in inference mode
        for critic in critics:
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(leaf).sum(), leaf)  # row i: grad D(x_i), plus D's BN cross-terms
            x = leaf.detach() + eta * grad
    return x.detach()


_INAPPLICABLE = {"ema_decay": None, "lr_decay": "none", "g_regularizers": None, "loss_args": None}


def _refuse_inapplicable(options: dict[str, Any]) -> None:
    """One clear error for a base-loop option xICFG has no use for (set to other than its neutral value)."""
    for name, neutral in _INAPPLICABLE.items():
        if options.get(name, neutral) not in (neutral, []):
            raise ValueError(
                f"model.{name} does not apply to xICFG (its generator update is the refit of G~, which restarts "
                f"the learning rate each stage; D's loss is the logistic one); remove it, got {options[name]!r}"
            )


class XICFG(GANModule, name="xicfg"):
    """xICFG with a logistic-loss D, T snapshots per stage and an approximator G~.

    Args:
        generator: the approximator G~.
        discriminator: D (one logit per sample).
        functional_steps: T, the functional-gradient steps (and D snapshots) per stage.
        d_updates: U, D updates per functional step (``n_dis`` is T * U).
        eta: the generator step size.
        refit_batches: N / batch size, the pairs (z, G_T(z)) the refit fits (the authors: 10).
        refit_epochs: epochs of each refit (the authors: 10).
        refit_lr_decay, refit_max_decays: learning-rate factor when an epoch's loss rises, and how often.
        init_std: std of W in G~'s initial target clamp(z W, -1, 1).
        rmsprop_alpha, rmsprop_eps: RMSprop settings of D and G~ (the authors: 0.95, 1e-18).
        lr_g, lr_d: learning rates of G~'s refit and of D (the authors: 2.5e-4 both).
        kwargs: the base loop's options: ``g_batch_size`` is the refit's minibatch (default: the real batch,
            as the authors'), ``d_regularizers`` add to D's loss, ``n_fixed`` and ``compile_nets`` as there.
            ``betas_*`` are unused (RMSprop); EMA, lr schedules and G regularizers are refused.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        functional_steps: int = 15,
        d_updates: int = 1,
        eta: float = 0.5,
        refit_batches: int = 10,
        refit_epochs: int = 10,
        refit_lr_decay: float = 0.1,
        refit_max_decays: int = 3,
        init_std: float = 0.01,
        rmsprop_alpha: float = 0.95,
        rmsprop_eps: float = 1e-18,
        lr_g: float = 2.5e-4,
        lr_d: float = 2.5e-4,
        **kwargs: Any,
    ):
        _refuse_inapplicable(kwargs)
        for name, value in (("functional_steps", functional_steps), ("d_updates", d_updates),
                            ("refit_batches", refit_batches), ("refit_epochs", refit_epochs)):
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        for name, value in (("eta", eta), ("init_std", init_std), ("rmsprop_eps", rmsprop_eps)):
            if not value > 0:
                raise ValueError(f"model.{name} must be > 0, got {value}")
        if not 0 < refit_lr_decay <= 1 or refit_max_decays < 0 or not 0 < rmsprop_alpha < 1:
            raise ValueError(
                "model.refit_lr_decay must be in (0, 1], model.refit_max_decays >= 0 and model.rmsprop_alpha in "
                f"(0, 1); got {refit_lr_decay}, {refit_max_decays}, {rmsprop_alpha}"
            )
        super().__init__(
            generator, discriminator, loss="minimax", n_dis=functional_steps * d_updates, lr_g=lr_g, lr_d=lr_d,
            optimizer="rmsprop", **kwargs,
        )
        self.functional_steps, self.d_updates, self.eta = functional_steps, d_updates, eta
        self.snapshots = nn.ModuleList(copy.deepcopy(discriminator).requires_grad_(False) for _ in range(functional_steps))
        self.register_buffer("approximator_initialized", torch.tensor(False))
        self._stage_updates = 0  # D updates so far in the current stage

    # ----------------------------------------------------------------- the generator
    def push(self, x: Tensor, steps: int | None = None) -> Tensor:
        """x pushed by the first ``steps`` snapshots (default all T)."""
        return functional_gradient_push(x, list(self.snapshots)[:steps], self.eta)

    def approximator(self, z: Tensor) -> Tensor:
        """G~(z) in eval mode, without gradient."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            with torch.no_grad():
                return self.generator(z)
        finally:
            self.generator.train(was_training)

    def d_fakes(self, n: int) -> Tensor:
        """G_t(z) with t = the snapshots already taken this stage."""
        return self.push(self.approximator(self.sample_z(n)), self._stage_updates // self.d_updates)

    def after_d_step(self, real: Tensor, fake: Tensor) -> None:
        """After every U-th D update of the stage, D_t <- D."""
        self._stage_updates += 1
        if self._stage_updates % self.d_updates == 0:
            self.snapshots[self._stage_updates // self.d_updates - 1].load_state_dict(self.discriminator.state_dict())

    def sample(self, n: int | None = None, z: Tensor | None = None, ema: bool = True) -> Tensor:
        """G_T(z): G~(z) pushed by the last stage's T snapshots (T gradient evaluations of D)."""
        return self.push(super().sample(n, z, ema=False))

    def train(self, mode: bool = True) -> "XICFG":
        super().train(mode)
        self.snapshots.train()  # as D when it was trained (batch statistics if D has batch norm)
        return self

    # ----------------------------------------------------------------- the approximator's fits
    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        if self._trainer is not None and self.trainer.world_size > 1 and torch.distributed.is_initialized():
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.trainer.world_size
        return value

    def fit_approximator(self, z: Tensor, target: Tensor, opt_g: Any, count_last_step: bool) -> float:
        """Fit G~ to (z, target): ``refit_epochs`` epochs of 0.5 ||G~(z) - target||^2 per sample in minibatches,
        lr x ``refit_lr_decay`` when an epoch's mean loss rises (at most ``refit_max_decays`` times), starting
        from a fresh optimizer state at ``lr_g``. Returns the last epoch's mean loss. Only the last step
        advances ``global_step`` when ``count_last_step`` (the refit is the stage's one generator update)."""
        hp = self.hparams
        opt = getattr(opt_g, "optimizer", opt_g)
        opt.state.clear()
        for group in opt.param_groups:
            group["lr"] = hp.lr_g
        batch = self.g_batch_size or len(z) // hp.refit_batches
        previous, decays, mean = math.inf, 0, math.nan
        self.generator.train()
        for epoch in range(hp.refit_epochs):
            chunks = torch.randperm(len(z), device=z.device).split(batch)
            total = torch.zeros((), device=z.device)
            for i, idx in enumerate(chunks):
                loss = 0.5 * (self.generator(z[idx]) - target[idx]).flatten(1).square().sum(1).mean()
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if count_last_step and epoch == hp.refit_epochs - 1 and i == len(chunks) - 1:
                    self.step_counted(opt_g)
                else:
                    self.step_uncounted(opt_g)
                total += loss.detach()
            mean = float(self._mean_over_ranks(total / len(chunks)))
            if mean > previous and decays < hp.refit_max_decays:
                decays += 1
                for group in opt.param_groups:
                    group["lr"] *= hp.refit_lr_decay
            previous = mean
        return mean

    def initialize_approximator(self, n: int, opt_g: Any) -> float:
        """Fit G~ to clamp(z W, -1, 1) with W ~ N(0, init_std^2) on ``n`` latents (the authors' initialize_G)."""
        z = self.sample_z(n)
        shape = self.approximator(z[:2]).shape[1:]
        w = torch.randn(self.z_dim, math.prod(shape), device=self.device) * self.hparams.init_std
        target = (z @ w).clamp(-1.0, 1.0).view(n, *shape)
        loss = self.fit_approximator(z, target, opt_g, count_last_step=False)
        self.approximator_initialized.fill_(True)
        return loss

    def g_step(self, real: Tensor, opt_g: Any) -> Tensor:
        """The refit of G~ to N = refit_batches x n pairs (z, G_T(z)), n the G batch; closes the stage."""
        n = self.g_batch_size or len(real)
        n_pairs = self.hparams.refit_batches * n
        z = self.sample_z(n_pairs)
        target = torch.cat([self.push(self.approximator(part)) for part in z.split(n)])
        self._stage_updates = 0
        return torch.tensor(self.fit_approximator(z, target, opt_g, count_last_step=True))

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        if not bool(self.approximator_initialized):
            n = len(batch) // self.n_dis
            self.initialize_approximator(self.hparams.refit_batches * (self.g_batch_size or n), self.optimizers()[0])
        super().training_step(batch, batch_idx)

    def make_optimizer(self, params: Any, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.RMSprop(params, lr=lr, alpha=hp.rmsprop_alpha, eps=hp.rmsprop_eps)

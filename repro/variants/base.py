"""GANModule: the training loop every variant shares (manual optimization).

One ``training_step`` is one generator iteration (Goodfellow et al. 2014, Alg. 1): ``n_dis``
discriminator steps, each on its own real batch and fresh z, then one generator step. The trainer's
``global_step`` counts generator updates, so ``trainer.max_steps`` is the papers' "generator
updates". A variant overrides only the hooks where it differs:

- ``discriminate(x)``      what D outputs for an input (gradient normalization lives here);
- ``real_input(x)``        what D sees for real data (TAN's lens);
- ``d_regularizers`` / ``g_regularizers``  extra loss terms (gradient penalty, Jacobian clamping, ...);
- ``after_d_step(real, fake)``  work after each D update (weight clipping, TAN's lens update);
- ``extra_optimizers()``   optimizers of extra networks, stepped by the variant.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from typing import Any, Callable, Literal

import lightning as L
import torch
from lightning.pytorch.core.optimizer import do_nothing_closure
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from repro.losses import objective
from repro.regularizers import Regularizer

__all__ = ["GANModule"]

Betas = tuple[float, float]
_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def linear_lr_decay(total: int) -> Callable[[int], float]:
    """Learning-rate multiplier after ``step`` generator updates: 1 at the start, 0 at ``total``."""
    return lambda step: max(0.0, 1.0 - step / total)


def _lightning_wrappers_idle(module: L.LightningModule) -> bool:
    """True when Lightning's backward / optimizer-step wrappers would only call hooks that neither the
    module nor any callback implements (one device, no loss scaling, default ``backward``): then plain
    ``loss.backward()`` / ``optimizer.step()`` do the same computation without the per-step hook calls."""
    trainer = module.trainer
    plugin = trainer.precision_plugin
    if type(trainer.strategy) is not SingleDeviceStrategy or type(plugin) not in (Precision, MixedPrecision):
        return False
    if getattr(plugin, "scaler", None) is not None or is_overridden("backward", module, L.LightningModule):
        return False
    owners = [(module, L.LightningModule), *((cb, L.Callback) for cb in trainer.callbacks)]
    return not any(is_overridden(hook, owner, parent) for owner, parent in owners for hook in _STEP_HOOKS)


class GANModule(L.LightningModule):
    """Shared GAN loop.

    Args:
        generator: maps z (``generator.z_dim``) to a sample.
        discriminator: maps a sample to one output per sample.
        loss: objective name in ``repro.losses.OBJECTIVES``; ``loss_args`` go to it.
        n_dis: discriminator steps per generator step.
        lr_g, lr_d, betas_g, betas_d: per-player learning rates and Adam betas (TTUR when they differ).
        optimizer: "adam" or "rmsprop" (both players).
        g_batch_size: latent batch of a generator step (default: the real batch size).
        ema_decay: decay of an exponential moving average of G's weights (None: off).
        lr_decay: "linear" decays both learning rates linearly to 0 at ``trainer.max_steps``.
        d_regularizers, g_regularizers: extra terms added to D's / G's loss.
        n_fixed: size of the fixed latent batch used for sample grids.
        compile_nets: ``torch.compile`` G and D in place at fit start. Off by default: measured slower
            on CPU for these nets (results/bench/); refused when D is differentiated twice (gradient
            penalty, gradient normalization), which torch.compile does not support.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: str = "nonsaturating",
        loss_args: dict[str, float] | None = None,
        n_dis: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: Betas = (0.5, 0.999),
        betas_d: Betas = (0.5, 0.999),
        optimizer: Literal["adam", "rmsprop"] = "adam",
        g_batch_size: int | None = None,
        ema_decay: float | None = None,
        lr_decay: Literal["none", "linear"] = "none",
        d_regularizers: list[Regularizer] | None = None,
        g_regularizers: list[Regularizer] | None = None,
        n_fixed: int = 64,
        compile_nets: bool = False,
    ):
        super().__init__()
        if n_dis < 1:
            raise ValueError(f"model.n_dis must be >= 1, got {n_dis}")
        for name, lr in (("lr_g", lr_g), ("lr_d", lr_d)):
            if not lr > 0:
                raise ValueError(f"model.{name} must be > 0, got {lr}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        if not hasattr(generator, "z_dim"):
            raise ValueError("model.generator must have a z_dim attribute (the latent size)")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "d_regularizers", "g_regularizers"])
        self.generator, self.discriminator = generator, discriminator
        self.objective = objective(loss, **(loss_args or {}))
        self.n_dis, self.g_batch_size, self.ema_decay = n_dis, g_batch_size, ema_decay
        self.d_regularizers: list[Regularizer] = list(d_regularizers or [])
        self.g_regularizers: list[Regularizer] = list(g_regularizers or [])
        self.generator_ema: nn.Module | None = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("fixed_z", torch.randn(n_fixed, generator.z_dim, generator=torch.Generator().manual_seed(0)))
        self._last: dict[str, Tensor] = {}
        self._ema_version, self._ema_stats_version = 0, -1
        self._lean_steps = False  # set at fit start by _lightning_wrappers_idle

    # ----------------------------------------------------------------- hooks for variants
    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    def discriminate(self, x: Tensor) -> Tensor:
        """D's output for ``x`` (one value per sample)."""
        return self.discriminator(x)

    def real_input(self, x: Tensor) -> Tensor:
        """What D sees for a real batch."""
        return x

    def after_d_step(self, real: Tensor, fake: Tensor) -> None:
        """Called after every D update with the real batch and the (detached) fakes it used."""

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of extra networks (returned after G's and D's by ``optimizers()``)."""
        return []

    @torch.no_grad()
    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        """Raise one clear ``ValueError`` if G's samples or D's inputs do not have the data's ``sample_shape``.

        Runs G and D once on two inputs in eval mode (no state changes: no BN statistics or SN
        power-iteration updates)."""
        nets = (self.generator, self.discriminator)
        modes = [net.training for net in nets]
        for net in nets:
            net.eval()
        try:
            try:
                fake = self.generator(torch.zeros(2, self.z_dim, device=self.device))
            except RuntimeError as err:
                raise ValueError(f"model.generator fails on a batch of latents (z_dim {self.z_dim}): {err}") from None
            if tuple(fake.shape[1:]) != tuple(sample_shape):
                raise ValueError(
                    f"model.generator makes samples of shape {tuple(fake.shape[1:])} but data samples have shape "
                    f"{tuple(sample_shape)}; set the generator's image_size / channels / out_dim to match "
                    "data.dataset and data.image_size"
                )
            try:
                self.discriminator(torch.zeros(2, *sample_shape, device=self.device))
            except RuntimeError as err:
                raise ValueError(
                    f"model.discriminator cannot take data samples of shape {tuple(sample_shape)}; set its "
                    f"image_size / channels / in_dim to match data.dataset and data.image_size ({err})"
                ) from None
        finally:
            for net, mode in zip(nets, modes):
                net.train(mode)

    # ----------------------------------------------------------------- sampling
    def sample_z(self, n: int) -> Tensor:
        return self.sample_noise(lambda m: torch.randn(m, self.z_dim, device=self.device), n)

    def sample_noise(self, draw: Callable[[int], Tensor], n: int) -> Tensor:
        """``draw(n)``: random values for ``n`` samples. Every random draw of a training step goes through
        here, so a seed ensemble (``repro.ensemble``) can take each member's share from its own stream."""
        return draw(n)

    def batch_mean(self, values: Tensor) -> Tensor:
        """A loss term from per-sample ``values``: their mean (a seed ensemble keeps one mean per member)."""
        return values.mean()

    @torch.no_grad()
    def sample(self, n: int | None = None, z: Tensor | None = None, ema: bool = True) -> Tensor:
        """Samples in eval mode from the EMA generator (if any and ``ema``) or G; ``z`` defaults to fresh draws."""
        net = self.generator_ema if (ema and self.generator_ema is not None) else self.generator
        if net is self.generator_ema and self._ema_stats_version != self._ema_version:
            self.standing_statistics(net)
            self._ema_stats_version = self._ema_version
        if z is None:
            z = self.sample_z(n if n is not None else len(self.fixed_z))
        was_training = net.training
        net.eval()
        out = net(z)
        net.train(was_training)
        return out

    # ----------------------------------------------------------------- the loop
    def on_fit_start(self) -> None:
        self._lean_steps = _lightning_wrappers_idle(self)
        if self.hparams.compile_nets:
            if self.d_regularizers or type(self).discriminate is not GANModule.discriminate:
                raise ValueError(
                    f"model.compile_nets: {type(self).__name__} differentiates D twice (gradient penalty or "
                    "normalization), which torch.compile does not support; set compile_nets: false"
                )
            self.generator.compile()
            self.discriminator.compile()

    def backward_loss(self, loss: Tensor) -> None:
        """``manual_backward``, or plain ``loss.backward()`` when Lightning's wrapper would only call unused hooks."""
        if self._lean_steps:
            loss.backward()
        else:
            self.manual_backward(loss)

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward with DDP's reducer switched off (``block_backward_sync``).

        One training step runs ``n_dis + 1`` backward passes over disjoint parameter sets inside one
        DDP forward; DDP's reducer expects one backward over all parameters (else its unused-parameter
        error, or with ``find_unused_parameters`` a graph walk and an all-reduce of every bucket, zeros
        included, per backward). Instead ``sync_gradients`` averages exactly the parameters about to be
        stepped, once per optimizer step."""
        with getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext)():
            super().manual_backward(loss, *args, **kwargs)

    def sync_gradients(self, optimizer: Any) -> None:
        """Average ``optimizer``'s gradients over the DDP ranks (one flat all-reduce); no-op on one process."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1 or not torch.distributed.is_initialized():
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat.div_(world)
        torch._foreach_copy_(grads, torch._utils._unflatten_dense_tensors(flat, grads))

    @torch.no_grad()
    def broadcast_buffers(self) -> None:
        """Under DDP, copy rank 0's buffers (G's BN running statistics; SN's u / v already agree) to every
        rank after each step: DDP's own per-forward broadcast is off under Lightning's manual optimization."""
        if self._trainer is None or self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for b in self.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
        for buffers in by_dtype.values():
            flat = torch._utils._flatten_dense_tensors(buffers)
            torch.distributed.broadcast(flat, 0)
            torch._foreach_copy_(buffers, torch._utils._unflatten_dense_tensors(flat, buffers))

    def step_uncounted(self, optimizer: Any) -> None:
        """Step an optimizer through the strategy (precision, DDP) without advancing ``global_step``
        (directly when the strategy's wrapper would only call unused hooks)."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        self.sync_gradients(optimizer)
        if self._lean_steps:
            optimizer.step()
        else:
            self.trainer.strategy.optimizer_step(optimizer, do_nothing_closure)

    def d_step(self, real: Tensor, opt_d: Any) -> Tensor:
        with torch.no_grad():
            fake = self.generator(self.sample_z(len(real)))
        real_in = self.real_input(real)
        loss = self.objective.d_loss(self.discriminate(real_in), self.discriminate(fake))
        for reg in self.d_regularizers:
            loss = loss + reg(self, real_in, fake)
        opt_d.zero_grad(set_to_none=True)
        self.backward_loss(loss)
        self.step_uncounted(opt_d)
        self.after_d_step(real, fake)
        return loss.detach()

    def g_step(self, n: int, opt_g: Any) -> Tensor:
        z = self.sample_z(n)
        fake = self.generator(z)
        self.discriminator.requires_grad_(False)  # only input gradients are needed through D
        try:
            loss = self.objective.g_loss(self.discriminate(fake))
            for reg in self.g_regularizers:
                loss = loss + reg(self, z, fake)
        finally:
            self.discriminator.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        self.backward_loss(loss)
        self.sync_gradients(opt_g)
        opt_g.step()
        return loss.detach()

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()[:2]
        d_loss = torch.stack([self.d_step(real, opt_d) for real in batch.chunk(self.n_dis)]).mean(0)
        g_loss = self.g_step(self.g_batch_size or len(batch) // self.n_dis, opt_g)
        self.broadcast_buffers()
        self.update_ema()
        schedulers = self.lr_schedulers()
        if schedulers:
            for s in schedulers if isinstance(schedulers, list) else [schedulers]:
                s.step()
        self._last = {"d_loss": d_loss, "g_loss": g_loss}
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({f"train/{k}": v for k, v in self._last.items()}, prog_bar=True)

    @torch.no_grad()
    def standing_statistics(self, net: nn.Module, n_batches: int = 16, batch_size: int = 256) -> None:
        """Re-estimate ``net``'s batch-norm running statistics from its own outputs on fixed latents
        ("standing statistics", Brock et al. 2019, BigGAN App. C.1): EMA-averaged weights paired with
        the statistics of the current G's weights give wrong samples. Uses no global RNG state."""
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        was_training = net.training
        net.train()
        gen = torch.Generator(device=self.device).manual_seed(0)
        for _ in range(n_batches):
            net(torch.randn(batch_size, self.z_dim, device=self.device, generator=gen))
        net.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of G's parameters (weight ``1 - ema_decay`` on the new ones); buffers are copied (and
        re-estimated by ``standing_statistics`` before sampling)."""
        if self.generator_ema is None:
            return
        ema_p = list(self.generator_ema.parameters())
        torch._foreach_lerp_(ema_p, list(self.generator.parameters()), 1.0 - self.ema_decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)
        self._ema_version += 1  # BN statistics are re-estimated before the next EMA sample

    # ----------------------------------------------------------------- optimizers, checkpoints
    def _make_optimizer(self, params: Any, lr: float, betas: Betas) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        return torch.optim.Adam(params, lr=lr, betas=betas)

    def check_schedule(self, max_steps: int | None) -> None:
        """Raise ``ValueError`` if the learning-rate schedule needs a step budget the trainer lacks."""
        if self.hparams.lr_decay == "linear" and (max_steps is None or max_steps <= 0):
            raise ValueError(
                f"model.lr_decay: linear needs trainer.max_steps > 0 (the number of generator updates), got {max_steps}"
            )

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizers = [
            self._make_optimizer(self.generator.parameters(), hp.lr_g, tuple(hp.betas_g)),
            self._make_optimizer(self.discriminator.parameters(), hp.lr_d, tuple(hp.betas_d)),
            *self.extra_optimizers(),
        ]
        if hp.lr_decay == "none":
            return optimizers
        self.check_schedule(self.trainer.max_steps)
        total = self.trainer.max_steps
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(o, linear_lr_decay(total)) for o in optimizers[:2]]

    def setup(self, stage: str) -> None:
        """Under DDP, seed each rank's RNG with the first 4 bytes of sha256("<seed>:<rank>") (``seed``:
        ``seed_everything``'s): ranks draw different latents and noise, reproducibly. (Not ``seed + rank *
        2**32``: the CPU generator keeps only the low 32 bits of a seed.) One process keeps its RNG as seeded."""
        if self.trainer.world_size > 1:
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
            digest = hashlib.sha256(f"{seed}:{self.trainer.global_rank}".encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:4], "little"))

    def _rng_state(self) -> Tensor:
        """This rank's torch RNG state (CPU, plus the CUDA device's when training on one) as one uint8 tensor."""
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return torch.cat(states)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every rank runs this hook; the gathered states let each rank resume its own stream
        per_rank = self.all_gather(self._rng_state().to(self.device)).reshape(self.trainer.world_size, -1).cpu()
        checkpoint["repro_rng"] = {"torch": torch.get_rng_state(), "per_rank": per_rank}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "repro_rng" not in checkpoint:
            raise ValueError("checkpoint was not written by repro (no 'repro_rng' entry); cannot resume from it")
        rng = checkpoint["repro_rng"]
        per_rank = rng.get("per_rank")
        if per_rank is None or len(per_rank) != self.trainer.world_size:
            torch.set_rng_state(rng["torch"])  # another world size: rank 0's stream, re-split per rank
            if self.trainer.world_size > 1:
                torch.manual_seed(int(torch.randint(2**62, ())) + self.trainer.global_rank)
            return
        state = per_rank[self.trainer.global_rank]
        n_cpu = torch.get_rng_state().numel()
        torch.set_rng_state(state[:n_cpu].clone())
        if state.numel() > n_cpu and self.device.type == "cuda":
            torch.cuda.set_rng_state(state[n_cpu:].clone(), self.device)

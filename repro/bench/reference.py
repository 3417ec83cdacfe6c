"""The bare-PyTorch reference: the same GAN iteration as ``GANModule.training_step``, no framework.

It drives a private copy of a variant's networks and math hooks (``discriminator_loss`` /
``generator_loss``: objective, ``discriminate``, ``real_input``, regularizers; ``after_d_step``) with plain
``torch.optim`` optimizers in a plain loop: no Trainer, strategy, precision plugin, LightningOptimizer,
callbacks or logging. Real batches come from the same in-memory tensor, drawn by index. This is the
practical limit the benchmark compares ``repro`` against.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import Tensor

from repro.data.loader import InMemoryBatches
from repro.variants.base import GANModule, linear_lr_decay

__all__ = ["ReferenceLoop", "autocast_context"]


def autocast_context(precision: str) -> contextlib.AbstractContextManager:
    """The autocast region Lightning's ``bf16-mixed`` plugin opens around a training step (CPU, no cache)."""
    if precision == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    if precision in ("32", "32-true"):
        return contextlib.nullcontext()
    raise ValueError(f"reference precision {precision!r} is not supported; valid: 32-true, bf16-mixed")


class ReferenceLoop:
    """One generator iteration per ``iteration()``: ``n_dis`` D steps on fresh real batches and z,
    then one G step (Goodfellow et al. 2014, Alg. 1), exactly as ``GANModule`` does it (with ``updates: shared_z``
    on the last D step's z and G(z)); with ``updates: simultaneous``, one D and one G step from the same real batch
    and fakes.

    Args:
        module: the variant to mirror; its networks are deep-copied, so the two never share state.
        data: the in-memory training tensor (uint8 images or float points).
        batch_size: real samples per D step.
        precision: "32-true" or "bf16-mixed" (autocast around the iteration, as Lightning does).
        seed: seed of the batch order (the data module's ``seed``).
        max_steps: generator updates of the run, for ``lr_decay: linear`` (as ``trainer.max_steps``).
    """

    def __init__(
        self,
        module: GANModule,
        data: Tensor,
        batch_size: int,
        precision: str = "32-true",
        seed: int = 0,
        max_steps: int | None = None,
    ):
        self.precision = precision
        autocast_context(precision)  # validate early
        self.m = copy.deepcopy(module)
        hp = self.m.hparams
        self.opt_g = self.m.make_optimizer(self.m.generator.parameters(), hp.lr_g, tuple(hp.betas_g))
        self.opt_d = self.m.make_optimizer(self.m.discriminator.parameters(), hp.lr_d, tuple(hp.betas_d))
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        if hp.lr_decay == "linear":
            if not max_steps:
                raise ValueError("model.lr_decay: linear needs the reference loop's max_steps > 0")
            self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, linear_lr_decay(max_steps)) for o in (self.opt_g, self.opt_d)]
        self.batches = InMemoryBatches(data, batch_size * self.m.n_dis, seed)
        self._it: Iterator[Tensor] = iter(self.batches)

    def _next_batch(self) -> Tensor:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.batches)
            return next(self._it)

    def iteration(self) -> None:
        """One generator iteration (n_dis D steps + 1 G step, or one simultaneous D and G step)."""
        m, z_dim = self.m, self.m.generator.z_dim
        batch = self._next_batch()
        with autocast_context(self.precision):
            if m.hparams.updates == "simultaneous":
                self._simultaneous(batch)
                return
            reals = batch.chunk(m.n_dis)
            shared = m.hparams.updates == "shared_z"
            for k, real in enumerate(reals):
                keep = shared and k == len(reals) - 1  # shared_z: the G step reuses this D step's z and G(z)
                z = torch.randn(len(real), z_dim)
                with torch.set_grad_enabled(keep):
                    g_out = m.generator(z)
                fake = g_out.detach()
                loss = m.discriminator_loss(real, fake)
                self.opt_d.zero_grad(set_to_none=True)
                loss.backward()
                self.opt_d.step()
                m.after_d_step(real, fake)
            if not shared:
                z = torch.randn(m.g_batch_size or len(real), z_dim)
                g_out = m.generator(z)
            loss = m.generator_loss(real, z, g_out)  # D frozen inside; ``real``: the last D batch
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            self._after_iteration()

    def _simultaneous(self, real: Tensor) -> None:
        """Both players' gradients at the same point, from one real batch and one set of fakes."""
        m = self.m
        z = torch.randn(len(real), m.generator.z_dim)
        fake = m.generator(z)
        d_loss = m.discriminator_loss(real, fake.detach())
        g_loss = m.generator_loss(real, z, fake)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        d_loss.backward()
        g_loss.backward()
        self.opt_d.step()
        self.opt_g.step()
        m.after_d_step(real, fake.detach())
        self._after_iteration()

    def _after_iteration(self) -> None:
        self.m.update_ema()
        for scheduler in self.schedulers:
            scheduler.step()

    def run(self, n: int) -> None:
        for _ in range(n):
            self.iteration()

"""Stop a run whose losses or weights became non-finite, or whose losses blew up past a bound, and record it
as diverged.

Every step adds a few tiny device-side ops (the largest |loss| of the step, over the module's ``last_losses``:
the losses and the regularizer terms; is it non-finite, or above ``max_abs_loss`` when that is set? remember
the first bad step, that value and which loss it was); the host looks at the flag only every
``check_every_n_steps`` generator steps (default: the trainer's logging interval, where the loss is read
anyway) and at the last step, when it also checks every parameter and buffer. No per-step host sync.

``max_abs_loss`` (opt-in) catches blow-ups that stay finite: in results/icml2018-methods/wgangp/seed0 D's loss
jumped from 2.3 to 5.4e6 at update 127 (then ~5e8) through its gradient penalty, and every number stayed finite.

On divergence, rank 0 writes ``<log_dir>/metrics.json`` (atomically) with ``status: diverged``, the
first step with a bad loss (``diverged_at_step``), the step it was detected at (``generator_steps``) and
why (``diverged_reason``: ``non-finite loss``, ``|train/<loss>| <value> > divergence.max_abs_loss <bound>`` or
``non-finite weights``; ``reason`` spells out the steps and the weights); then ``TrainingDiverged`` is raised
on every rank, so no further step, final evaluation or checkpoint runs on the broken weights. ``repro fit``
turns it into exit code 3.

A checkpoint is never written from broken weights: before any checkpoint is saved (by
``ModelCheckpoint`` at an epoch end that falls between two checks, or by any other callback) the
same check runs, and on divergence it stops the run before the file is written, so the newest
checkpoint on disk is the last one taken from finite weights.
"""
from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from repro.callbacks.rundir import run_dir
from repro.errors import DIVERGED_EXIT_CODE, TrainingDiverged
from repro.record import Status, machine, write_record

__all__ = ["DivergenceStop", "TrainingDiverged", "DIVERGED_EXIT_CODE"]


def _nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of floating parameters and buffers holding a NaN or an infinity."""
    named = [*module.named_parameters(), *module.named_buffers()]
    named = [(n, t) for n, t in named if t.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return [n for (n, _), good in zip(named, ok) if not good]


class DivergenceStop(L.Callback):
    """Stop training on non-finite losses or weights, and on a loss whose absolute value exceeds ``max_abs_loss``
    (None: no bound). Checked every ``check_every_n_steps`` G steps (None: at the trainer's
    ``log_every_n_steps``; 0: only before a checkpoint is written)."""

    def __init__(self, check_every_n_steps: int | None = None, max_abs_loss: float | None = None):
        if check_every_n_steps is not None and check_every_n_steps < 0:
            raise ValueError(f"divergence.check_every_n_steps must be >= 0 or null, got {check_every_n_steps}")
        if max_abs_loss is not None and not max_abs_loss > 0:
            raise ValueError(f"divergence.max_abs_loss must be > 0 (a bound on |loss|) or null, got {max_abs_loss}")
        self.check_every_n_steps, self.max_abs_loss = check_every_n_steps, max_abs_loss
        self.record: dict[str, Any] | None = None
        # device scalars from the start of training: the first G step with a bad loss (-1 if none), that step's
        # largest |loss| and its index in ``last_losses``
        self._first_bad: Tensor | None = None
        self._first_peak, self._first_which = torch.zeros(()), torch.zeros((), dtype=torch.long)
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._first_bad = torch.full((), -1, dtype=torch.long, device=module.device)
        self._first_peak = torch.zeros((), device=module.device)
        self._first_which = torch.zeros((), dtype=torch.long, device=module.device)
        self._t0 = time.perf_counter()

    def _interval(self, trainer: L.Trainer) -> int:
        return trainer.log_every_n_steps if self.check_every_n_steps is None else self.check_every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        every = self._interval(trainer)
        losses = list(getattr(module, "last_losses", {}).values())
        if every == 0 or not losses:
            return
        step = trainer.global_step
        peak, which = torch.stack(losses).abs().max(0)  # NaN propagates
        bad_now = ~torch.isfinite(peak) if self.max_abs_loss is None else ~(peak <= self.max_abs_loss)
        first_now = bad_now & (self._first_bad < 0)
        self._first_bad = torch.where(first_now, step, self._first_bad)
        self._first_peak = torch.where(first_now, peak, self._first_peak)
        self._first_which = torch.where(first_now, which, self._first_which)
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= step
        if step % every == 0 or last:
            self._check(trainer, module, step)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Check before every checkpoint, whatever the interval: raises before broken weights are saved."""
        if self._first_bad is not None:
            self._check(trainer, module, trainer.global_step)

    def _loss_cause(self, trainer: L.Trainer, module: L.LightningModule, first_steps: Tensor) -> str:
        """Why the earliest bad loss (of any rank; ``first_steps``: each rank's first bad step, -1 none) was bad:
        ``non-finite loss``, or ``|train/<loss>| <value> > divergence.max_abs_loss <bound>``. Every rank calls it
        (one all_gather of the ranks' values, only on divergence)."""
        local = torch.stack([self._first_peak, self._first_which.to(self._first_peak.dtype)])
        values = trainer.strategy.all_gather(local).reshape(-1, 2).cpu()
        rank = min((int(s), r) for r, s in enumerate(first_steps) if s >= 0)[1]
        peak, which = float(values[rank, 0]), int(values[rank, 1])
        if not math.isfinite(peak):
            return "non-finite loss"
        name = list(getattr(module, "last_losses", {}))[which]
        return f"|train/{name}| {peak:.3g} > divergence.max_abs_loss {self.max_abs_loss:g}"

    def _check(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        bad_weights = _nonfinite_tensors(module)
        # one small all_gather: every rank learns whether any rank saw a bad loss, and when
        flags = torch.stack([self._first_bad, torch.tensor(len(bad_weights), device=module.device)])
        gathered = trainer.strategy.all_gather(flags).reshape(-1, 2).cpu()
        loss_steps = [int(s) for s in gathered[:, 0] if s >= 0]
        if not loss_steps and int(gathered[:, 1].max()) == 0:
            return
        first = min(loss_steps) if loss_steps else step
        cause = self._loss_cause(trainer, module, gathered[:, 0]) if loss_steps else "non-finite weights"
        reason = (f"{cause} first at generator step {first}" if loss_steps else "")
        if bad_weights:
            shown = ", ".join(bad_weights[:3]) + (" ..." if len(bad_weights) > 3 else "")
            reason += ("; " if reason else "") + f"non-finite weights at step {step}: {shown}"
        self.record = {
            "status": Status.DIVERGED.value,
            "generator_steps": step,
            "diverged_at_step": first,
            "reason": reason or "non-finite weights on another rank",
            "diverged_reason": cause,
            "train_seconds": time.perf_counter() - self._t0,
            "machine": machine(module.device),
        }
        if trainer.global_rank == 0:
            write_record(self.record, run_dir(trainer))
        raise TrainingDiverged(f"training diverged ({self.record['reason']}); recorded as status {Status.DIVERGED.value!r}")

"""Stop a run whose losses or weights became non-finite, and record it as diverged.

Every step adds two tiny device-side ops (is this step's loss finite? remember the first bad step);
the host looks at the flag only every ``check_every_n_steps`` generator steps (default: the trainer's
logging interval, where the loss is read anyway) and at the last step, when it also checks every
parameter and buffer. No per-step host sync.

On divergence, rank 0 writes ``<log_dir>/metrics.json`` (atomically) with ``status: diverged``, the
first step with a non-finite loss (``diverged_at_step``) and the step it was detected at
(``generator_steps``); then ``TrainingDiverged`` is raised on every rank, so no further step, final
evaluation or checkpoint runs on the broken weights. ``repro fit`` turns it into exit code 3.

A checkpoint is never written from broken weights: before any checkpoint is saved (by
``ModelCheckpoint`` at an epoch end that falls between two checks, or by any other callback) the
same check runs, and on divergence it stops the run before the file is written, so the newest
checkpoint on disk is the last one taken from finite weights.
"""
from __future__ import annotations

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
    """Stop training on non-finite losses or weights (checked every ``check_every_n_steps`` G steps;
    None: at the trainer's ``log_every_n_steps``; 0: only before a checkpoint is written)."""

    def __init__(self, check_every_n_steps: int | None = None):
        if check_every_n_steps is not None and check_every_n_steps < 0:
            raise ValueError(f"divergence.check_every_n_steps must be >= 0 or null, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.record: dict[str, Any] | None = None
        self._first_bad: Tensor | None = None  # device scalar: first G step with a non-finite loss, -1 if none
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._first_bad = torch.full((), -1, dtype=torch.long, device=module.device)
        self._t0 = time.perf_counter()

    def _interval(self, trainer: L.Trainer) -> int:
        return trainer.log_every_n_steps if self.check_every_n_steps is None else self.check_every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        every = self._interval(trainer)
        losses = list(getattr(module, "last_losses", {}).values())
        if every == 0 or not losses:
            return
        step = trainer.global_step
        bad_now = ~torch.isfinite(torch.stack(losses)).all()
        self._first_bad = torch.where(bad_now & (self._first_bad < 0), step, self._first_bad)
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= step
        if step % every == 0 or last:
            self._check(trainer, module, step)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Check before every checkpoint, whatever the interval: raises before broken weights are saved."""
        if self._first_bad is not None:
            self._check(trainer, module, trainer.global_step)

    def _check(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        bad_weights = _nonfinite_tensors(module)
        # one small all_gather: every rank learns whether any rank saw a bad loss, and when
        flags = torch.stack([self._first_bad, torch.tensor(len(bad_weights), device=module.device)])
        gathered = trainer.strategy.all_gather(flags).reshape(-1, 2).cpu()
        loss_steps = [int(s) for s in gathered[:, 0] if s >= 0]
        if not loss_steps and int(gathered[:, 1].max()) == 0:
            return
        first = min(loss_steps) if loss_steps else step
        reason = (f"non-finite loss first at generator step {first}" if loss_steps else "")
        if bad_weights:
            shown = ", ".join(bad_weights[:3]) + (" ..." if len(bad_weights) > 3 else "")
            reason += ("; " if reason else "") + f"non-finite weights at step {step}: {shown}"
        self.record = {
            "status": Status.DIVERGED.value,
            "generator_steps": step,
            "diverged_at_step": first,
            "reason": reason or "non-finite weights on another rank",
            "train_seconds": time.perf_counter() - self._t0,
            "machine": machine(module.device),
        }
        if trainer.global_rank == 0:
            write_record(self.record, run_dir(trainer))
        raise TrainingDiverged(f"training diverged ({self.record['reason']}); recorded as status {Status.DIVERGED.value!r}")

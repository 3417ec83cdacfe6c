"""A check for data-parallel runs: the model is the same on every rank after every step."""
from __future__ import annotations

import json
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from repro.callbacks.rundir import run_dir

__all__ = ["RankSyncCheck", "synced_tensors"]


def synced_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Every floating parameter and buffer (SN's u / v, BN running statistics, EMA weights included):
    data-parallel training must keep all of them identical on every rank."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return [(n, t) for n, t in named if t.is_floating_point()]


class RankSyncCheck(L.Callback):
    """Every ``every_n_steps`` generator steps, gather ``synced_tensors`` from all ranks and raise if
    any differs in any bit; at the end rank 0 writes ``<log_dir>/rank_sync.json`` (checks made, tensors
    compared). Costs one all-gather of the model per check: a debugging / testing aid
    (``--trainer.callbacks+=repro.callbacks.RankSyncCheck``)."""

    def __init__(self, every_n_steps: int = 1):
        if every_n_steps < 1:
            raise ValueError(f"RankSyncCheck.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.checks = 0
        self.names: list[str] = []

    def check(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        named = synced_tensors(module)
        self.names = [n for n, _ in named]
        flat = torch.cat([t.detach().reshape(-1).double() for _, t in named])  # float32 -> float64 is exact
        gathered = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1)
        same = (gathered == gathered[0]) | (gathered.isnan() & gathered[0].isnan())  # NaN = NaN here
        differs = ~same.all(dim=0)
        if bool(differs.any()):
            sizes = [t.numel() for _, t in named]
            bad = [n for n, part in zip(self.names, differs.split(sizes)) if bool(part.any())]
            raise RuntimeError(f"ranks disagree after generator step {trainer.global_step}: {', '.join(bad[:5])}")
        self.checks += 1

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.check(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        path = run_dir(trainer) / "rank_sync.json"
        if trainer.global_rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"checks": self.checks, "world_size": trainer.world_size,
                                        "tensors": self.names}, indent=1))

"""Batches of an in-memory tensor drawn by index: no per-sample Python in the hot path; and a plain training loop over
them for the variants' pre-training stages (RFGAN's autoencoder, S2GAN's rotation net)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from repro.pixels import to_float

__all__ = ["InMemoryBatches", "pretrain"]


class InMemoryBatches:
    """Shuffled batches of ``data`` (epoch = one pass); resumable through ``state_dict``.

    ``rank`` / ``world_size`` split each epoch's permutation so DDP ranks see disjoint samples.
    uint8 images are converted to floats in [-1, 1] per batch. With ``labels`` (one per sample) each batch
    is ``(samples, their labels)``; the order of the samples is the same either way.
    """

    def __init__(self, data: Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 labels: Tensor | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_rank = len(data) // world_size
        if per_rank < batch_size:
            raise ValueError(
                f"data set of {len(data)} samples is too small for batch_size {batch_size} on {world_size} rank(s)"
            )
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} samples")
        self.data, self.labels, self.batch_size, self.seed = data, labels, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = per_rank // batch_size
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _order(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.data), generator=g)
        per_rank = len(self.data) // self.world_size
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _convert(self, batch: Tensor) -> Tensor:
        return to_float(batch) if batch.dtype == torch.uint8 else batch

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        if self.position >= self.batches_per_epoch:  # the last pass was consumed by count (Lightning knows
            self.epoch, self.position = self.epoch + 1, 0  # len()), so the generator never reached its end
        order = self._order()
        start = self.position
        for b in range(start, self.batches_per_epoch):
            self.position = b + 1
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = self._convert(self.data[idx])
            yield batch if self.labels is None else (batch, self.labels[idx])
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def pretrain(net: nn.Module, loss_of: Callable[[Tensor], Tensor], optimizer: torch.optim.Optimizer, data: Tensor,
             steps: int, batch_size: int, seed: int) -> float:
    """Train ``net`` for ``steps`` batches of ``data`` (drawn in a ``seed``-ed order) on ``loss_of(batch)`` with
    ``optimizer``, then freeze it in eval mode; returns the last loss."""
    net.requires_grad_(True).train()
    batches = InMemoryBatches(data, batch_size, seed)
    step, loss = 0, torch.tensor(float("nan"))
    while step < steps:
        for x in batches:
            loss = loss_of(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    net.requires_grad_(False).eval()
    return loss.item()

"""What a manually optimized GAN needs from the strategy: gradient and buffer sync across DDP ranks,
per-rank RNG streams that survive a checkpoint, and the test for the lean (wrapper-free) step path.

Free functions of a ``LightningModule`` / trainer / optimizer; nothing here knows about GANs.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy, Strategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

__all__ = [
    "wrappers_idle",
    "backward_sync_blocked",
    "sync_gradients",
    "broadcast_buffers",
    "seed_rank",
    "gather_rng_states",
    "restore_rng_state",
]

_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def wrappers_idle(module: L.LightningModule) -> bool:
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


def backward_sync_blocked(strategy: Strategy) -> contextlib.AbstractContextManager:
    """DDP's reducer switched off for one backward (``block_backward_sync``; a no-op elsewhere).

    One GAN iteration runs several backward passes over disjoint parameter sets inside one DDP
    forward; DDP's reducer expects one backward over all parameters (else its unused-parameter error,
    or with ``find_unused_parameters`` a graph walk and an all-reduce of every bucket, zeros included,
    per backward). ``sync_gradients`` instead averages exactly the parameters about to be stepped."""
    return getattr(strategy, "block_backward_sync", contextlib.nullcontext)()


def _distributed(world_size: int) -> bool:
    return world_size > 1 and torch.distributed.is_initialized()


def sync_gradients(optimizer: Any, world_size: int) -> None:
    """Average ``optimizer``'s gradients over the ranks (one flat all-reduce); no-op on one process."""
    if not _distributed(world_size):
        return
    optimizer = getattr(optimizer, "optimizer", optimizer)
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat.div_(world_size)
    torch._foreach_copy_(grads, torch._utils._unflatten_dense_tensors(flat, grads))


@torch.no_grad()
def broadcast_buffers(module: nn.Module, world_size: int) -> None:
    """Copy rank 0's buffers (BN running statistics; SN's u / v already agree) to every rank: DDP's own
    per-forward broadcast is off under Lightning's manual optimization. No-op on one process."""
    if not _distributed(world_size):
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for b in module.buffers():
        by_dtype.setdefault(b.dtype, []).append(b)
    for buffers in by_dtype.values():
        flat = torch._utils._flatten_dense_tensors(buffers)
        torch.distributed.broadcast(flat, 0)
        torch._foreach_copy_(buffers, torch._utils._unflatten_dense_tensors(flat, buffers))


def seed_rank(world_size: int, rank: int) -> None:
    """Under DDP, seed this rank's RNG with the first 4 bytes of sha256("<seed>:<rank>") (``seed``:
    ``seed_everything``'s): ranks draw different latents and noise, reproducibly. (Not ``seed + rank *
    2**32``: the CPU generator keeps only the low 32 bits of a seed.) One process keeps its RNG as seeded."""
    if world_size > 1:
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        digest = hashlib.sha256(f"{seed}:{rank}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:4], "little"))


def _rng_state(device: torch.device) -> Tensor:
    """This rank's torch RNG state (CPU, plus the CUDA device's when training on one) as one uint8 tensor."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return torch.cat(states)


def gather_rng_states(module: L.LightningModule) -> dict[str, Tensor]:
    """Every rank's RNG state (all ranks must call this): the checkpoint entry ``restore_rng_state`` reads."""
    world = module.trainer.world_size
    per_rank = module.all_gather(_rng_state(module.device).to(module.device)).reshape(world, -1).cpu()
    return {"torch": torch.get_rng_state(), "per_rank": per_rank}


def restore_rng_state(rng: dict[str, Tensor], world_size: int, rank: int, device: torch.device) -> None:
    """Resume this rank's RNG stream from ``gather_rng_states``' entry; under another world size, rank 0's
    CPU stream is re-split per rank."""
    per_rank = rng.get("per_rank")
    if per_rank is None or len(per_rank) != world_size:
        torch.set_rng_state(rng["torch"])
        if world_size > 1:
            torch.manual_seed(int(torch.randint(2**62, ())) + rank)
        return
    state = per_rank[rank]
    n_cpu = torch.get_rng_state().numel()
    torch.set_rng_state(state[:n_cpu].clone())
    if state.numel() > n_cpu and device.type == "cuda":
        torch.cuda.set_rng_state(state[n_cpu:].clone(), device)

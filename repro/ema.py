"""An exponential moving average of a generator's weights, and batch-norm statistics that fit it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["update_ema", "decay_at", "standing_statistics", "kept_norm_statistics"]


def decay_at(step: int, decay: float, start: int) -> float:
    """The EMA decay after generator update ``step``: 0 (the EMA is a copy of G) while ``step < start``, then
    ``decay`` (BigGAN-PyTorch ``utils.ema.update(itr)``, ``--ema_start``: "peg the ema weights to the
    underlying weights" before the start iteration)."""
    return 0.0 if step < start else decay


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net for every parameter; buffers are copied (re-estimate them
    with ``standing_statistics`` before sampling from ``ema``)."""
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def standing_statistics(net: nn.Module, z_dim: int, device: torch.device, n_batches: int = 16,
                        batch_size: int = 256, num_classes: int | None = None,
                        dtype: torch.dtype | None = None) -> None:
    """Re-estimate ``net``'s batch-norm running statistics from its own outputs on fixed latents
    ("standing statistics", Brock et al. 2019, BigGAN App. C.1): EMA-averaged weights paired with
    the statistics of the current G's weights give wrong samples. A class-conditional G (``num_classes``)
    gets fixed uniformly drawn labels too; the latents are in ``dtype`` (the net's, default torch's). Uses no
    global RNG state."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = net.training
    net.train()
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(n_batches):
        z = torch.randn(batch_size, z_dim, device=device, generator=gen, dtype=dtype)
        if num_classes is None:
            net(z)
        else:
            net(z, torch.randint(num_classes, (batch_size,), device=device, generator=gen))
    net.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@contextmanager
def kept_norm_statistics(net: nn.Module) -> Iterator[None]:
    """Puts ``net``'s batch-norm running statistics back as they were on exit, in place (a seed-ensemble member's
    buffers are views of the ensemble's), e.g. around ``standing_statistics`` for one evaluation."""
    buffers = [b for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)

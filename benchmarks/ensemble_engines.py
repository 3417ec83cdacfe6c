"""Which seed-ensemble engine (issue 20): ensemble layers vs ``torch.func.vmap(functional_call)`` vs K models.

One NS-GAN iteration (a D step on real + fake, then a G step; Adam on both) of the ring8 MLPs (G 3x128 with
batch norm, D 3x128, batch 256) for K members, three ways, alternated in blocks so load drifts hit all:
- ``layers``: ``repro.ensemble`` ensemble layers (batched matmul), the K member losses summed;
- ``vmap``: ``torch.func.stack_module_state`` + ``vmap(functional_call)`` over the same stacked parameters;
- ``separate``: K ordinary models stepped one after the other in this process (what K runs cost, minus
  their Python start-up).
Prints milliseconds per model update (iteration time / K), median over blocks, on one thread.

    PYTHONPATH=. python benchmarks/ensemble_engines.py --members 8 --steps 200
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from repro.ensemble.module import _replace_layers
from repro.nets import MLPDiscriminator, MLPGenerator


def nets(k: int) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    gs, ds = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        gs.append(MLPGenerator(width=128, depth=3))
        ds.append(MLPDiscriminator(width=128, depth=3))
    return gs, ds


def d_loss(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()


def separate_step(k: int, batch: int) -> Callable[[], None]:
    gs, ds = nets(k)
    opts = [(torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)) for g, d in zip(gs, ds)]

    def step() -> None:
        for g, d, (og, od) in zip(gs, ds, opts):
            real = torch.randn(batch, 2)
            with torch.no_grad():
                fake = g(torch.randn(batch, 2))
            od.zero_grad()
            d_loss(d(real), d(fake)).backward()
            od.step()
            og.zero_grad()
            F.softplus(-d(g(torch.randn(batch, 2)))).mean().backward()
            og.step()
    return step


def layers_step(k: int, batch: int) -> Callable[[], None]:
    gs, ds = nets(k)
    g, d = copy.deepcopy(gs[0]), copy.deepcopy(ds[0])
    _replace_layers(g, gs)
    _replace_layers(d, ds)
    og, od = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    per_member = vmap(d_loss)

    def step() -> None:
        real = torch.randn(k * batch, 2)
        with torch.no_grad():
            fake = g(torch.randn(k * batch, 2))
        od.zero_grad()
        per_member(d(real).view(k, -1), d(fake).view(k, -1)).sum().backward()
        od.step()
        og.zero_grad()
        F.softplus(-d(g(torch.randn(k * batch, 2)))).view(k, -1).mean(1).sum().backward()
        og.step()
    return step


def vmap_step(k: int, batch: int) -> Callable[[], None]:
    gs, ds = nets(k)
    pg, bg = stack_module_state(gs)
    pd, bd = stack_module_state(ds)
    g0, d0 = copy.deepcopy(gs[0]).to("meta"), copy.deepcopy(ds[0]).to("meta")
    og, od = torch.optim.Adam(pg.values(), 1e-3), torch.optim.Adam(pd.values(), 1e-3)

    def d_member(p_d, b_d, p_g, b_g, real, z):
        fake = functional_call(g0, (p_g, b_g), (z,)).detach()
        return d_loss(functional_call(d0, (p_d, b_d), (real,)), functional_call(d0, (p_d, b_d), (fake,)))

    def g_member(p_d, b_d, p_g, b_g, z):
        return F.softplus(-functional_call(d0, (p_d, b_d), (functional_call(g0, (p_g, b_g), (z,)),))).mean()

    def step() -> None:
        real, z = torch.randn(k, batch, 2), torch.randn(k, batch, 2)
        od.zero_grad()
        vmap(d_member)(pd, bd, pg, bg, real, z).sum().backward()
        od.step()
        og.zero_grad()
        vmap(g_member)(pd, bd, pg, bg, torch.randn(k, batch, 2)).sum().backward()
        og.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="iterations per engine, in 5 alternated blocks")
    args = p.parse_args()
    torch.set_num_threads(1)
    engines = {name: make(args.members, args.batch)
               for name, make in (("layers", layers_step), ("vmap", vmap_step), ("separate", separate_step))}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for step in engines.values():
        step()  # warm-up
    for _ in range(5):
        for name, step in engines.items():
            t = time.perf_counter()
            for _ in range(args.steps // 5):
                step()
            times[name].append((time.perf_counter() - t) / (args.steps // 5) / args.members)
    for name, ts in times.items():
        print(f"{name:>9}: {1e3 * statistics.median(ts):.3f} ms per model update (K={args.members})")


if __name__ == "__main__":
    main()

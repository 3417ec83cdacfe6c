"""Stacked-MNIST iteration cost by loop and weight layout: ``model.init_args.updates`` alternating / shared_z
times ``channels_last`` false / true.

Usage: REPRO_DATA_DIR=../shared/data python benchmarks/metz_updates.py [VARIANT] [quarter|half] [--block 10]
       [--rounds 5]

Builds ``repro bench``'s ``metz`` workload (paper_tables/stacked-mnist.yaml's rows: data, Metz nets, optimizer) for
``VARIANT`` (default nsgan) with the D of the given width, once per setting, and times the bare-PyTorch mirror of
its iteration (``repro.bench.ReferenceLoop``: same nets, losses and optimizers as ``GANModule``) in alternating
blocks in one process on one thread, after 3 warm-up iterations each; prints the median ms per iteration of each
setting and its ratio to the default (alternating, NCHW), with the 1-minute load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from repro import REPO_ROOT
from repro.bench.harness import WORKLOADS, build_run
from repro.bench.reference import ReferenceLoop

SETTINGS = [(u, cl) for u in ("alternating", "shared_z") for cl in ("false", "true")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", nargs="?", default="nsgan")
    p.add_argument("d", nargs="?", default="quarter", choices=("quarter", "half"))
    p.add_argument("--block", type=int, default=10, help="iterations per timed block")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = p.parse_args()
    torch.set_num_threads(1)
    loops = {}
    with tempfile.TemporaryDirectory() as tmp:
        for updates, channels_last in SETTINGS:
            cli = build_run("metz", args.variant, "32-true", 10, Path(tmp), (
                "--model.init_args.discriminator", str(REPO_ROOT / f"configs/nets/metz_d_{args.d}.yaml"),
                *WORKLOADS["metz"].variant_overrides.get(args.variant, ()),  # after the D it edits
                "--model.init_args.updates", updates, "--model.init_args.channels_last", channels_last))
            dm = cli.datamodule
            loops[(updates, channels_last)] = ReferenceLoop(cli.model, dm.data, dm.batch_size, "32-true", dm.seed)
    for loop in loops.values():
        loop.run(3)
    ms: dict[tuple[str, str], list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for key, loop in loops.items():
            start = time.perf_counter()
            loop.run(args.block)
            ms[key].append((time.perf_counter() - start) / args.block * 1e3)
    base = statistics.median(ms[SETTINGS[0]])
    for (updates, channels_last), values in ms.items():
        m = statistics.median(values)
        print(f"{args.variant} D = {args.d} G, updates {updates:11s} channels_last {channels_last:5s}: "
              f"{m:6.1f} ms per iteration (x{m / base:.2f}; load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()

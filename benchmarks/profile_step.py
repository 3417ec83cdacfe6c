"""Profile the Python side of repro's training step (cProfile) on one workload and variant.

Usage: python benchmarks/profile_step.py [workload] [variant] [steps] [precision] [function names...]
Prints self time grouped by package (lightning / torch / repro / other) and the top functions by
self time, so the framework's share of an iteration can be read off directly; named functions get their callers.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch

from repro.bench.harness import build_run


def _package(filename: str) -> str:
    for name in ("lightning", "torch", "repro"):
        if f"/{name}/" in filename:
            return name
    return "builtin/C" if filename.startswith("~") else "other"


def main(
    workload: str = "mlp", variant: str = "nsgan", steps: int = 300, precision: str = "32-true", *callers: str
) -> None:
    torch.set_num_threads(1)
    prof = cProfile.Profile()

    class Window(L.Callback):
        """Profile from the end of warm-up iteration ``warmup`` to the end of the run."""

        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step == warmup:
                prof.enable()

        def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
            prof.disable()

    warmup = 20
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_run(workload, variant, precision, warmup + steps, Path(tmp))
        cli.trainer.callbacks.append(Window())
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    prof.dump_stats(f"/tmp/repro-profile-{workload}-{variant}.pstats")
    print(f"callbacks: {[type(c).__name__ for c in cli.trainer.callbacks]}")
    stats = pstats.Stats(prof)
    by_pkg: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        by_pkg[_package(filename)] += tottime
    total = sum(by_pkg.values())
    print(f"{workload}/{variant}/{precision}: {steps} iterations, {1e3 * total / steps:.2f} ms/it under cProfile")
    for pkg, t in sorted(by_pkg.items(), key=lambda kv: -kv[1]):
        print(f"  {pkg:<10} {1e3 * t / steps:8.3f} ms/it  {100 * t / total:5.1f}%")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("lightning|repro", 40)
    for name in callers:
        stats.print_callers(name)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(*(a[:2]), *(int(x) for x in a[2:3]), *(a[3:]))

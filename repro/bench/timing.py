"""Timing inside one repro run: blocks of repro iterations alternate with blocks of the reference loop
(``repro.bench.reference``) in the same process, so slow drifts of the machine's load cancel in the
per-round ratios; the last iteration of each is profiled for peak memory."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from repro.bench.reference import ReferenceLoop

__all__ = ["BenchResult", "Alternation", "StepHookListener", "SHORT"]

SHORT = {"32-true": "fp32", "bf16-mixed": "bf16"}


@dataclass
class BenchResult:
    """Per-round seconds per iteration for repro and each reference precision, plus memory and checks."""

    workload: str
    variant: str
    precision: str
    samples_per_iteration: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    reference_error: str | None = None

    def median(self, impl: str) -> float:
        return statistics.median(self.seconds[impl])

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of the per-round ratio num / den (both measured in the same round)."""
        return statistics.median(a / b for a, b in zip(self.seconds[num], self.seconds[den]))


def _tensor_mb(tensors: Any) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor)) / 2**20


def _state_mb(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> float:
    """Parameters, buffers and optimizer state held between iterations."""
    states = [v for opt in optimizers for s in opt.state.values() for v in s.values()]
    return _tensor_mb(module.parameters()) + _tensor_mb(module.buffers()) + _tensor_mb(states)


def _transient_peak_mb(prof: profile) -> float:
    """Peak of the running sum of allocations minus frees over one profiled iteration (tensor memory)."""
    run = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        run += event.self_cpu_memory_usage
        peak = max(peak, run)
    return peak / 2**20


def _profiler() -> profile:
    return profile(activities=[ProfilerActivity.CPU], profile_memory=True)


class Alternation(L.Callback):
    """Times blocks of repro iterations between ``on_train_batch_end`` calls and runs reference blocks
    in between; the last iteration of the run is profiled for memory."""

    def __init__(self, result: BenchResult, guests: dict[str, ReferenceLoop], warmup: int, block: int, rounds: int):
        self.result, self.guests = result, guests
        self.warmup, self.block, self.rounds = warmup, block, rounds
        self.last_step = warmup + block * rounds + 1
        self._t0 = 0.0
        self._prof: profile | None = None
        result.seconds = {"repro": [], **{name: [] for name in guests}}

    def _run_guests(self, n: int, timed: bool) -> None:
        for name in list(self.guests):
            t0 = time.perf_counter()
            try:
                self.guests[name].run(n)
            except Exception as err:  # a variant whose hooks need the trainer: no reference for it
                self.result.reference_error = f"{type(err).__name__}: {err}"
                del self.guests[name], self.result.seconds[name]
                continue
            if timed:
                self.result.seconds[name].append((time.perf_counter() - t0) / n)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.last_step - 1:
            self._prof = _profiler().__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self.warmup:
            self._run_guests(self.warmup, timed=False)
            self._t0 = time.perf_counter()
        elif step > self.warmup and (step - self.warmup) % self.block == 0 and step < self.last_step:
            self.result.seconds["repro"].append((time.perf_counter() - self._t0) / self.block)
            self._run_guests(self.block, timed=True)
            self._t0 = time.perf_counter()
        elif step == self.last_step and self._prof is not None:
            self._prof.__exit__(None, None, None)
            self.result.peak_mb["repro"] = _transient_peak_mb(self._prof) + _state_mb(module, trainer.optimizers)
            self._prof = None
            for name, guest in self.guests.items():
                with _profiler() as prof:
                    guest.iteration()
                self.result.peak_mb[name] = _transient_peak_mb(prof) + _state_mb(guest.m, [guest.opt_g, guest.opt_d])


class StepHookListener(L.Callback):
    """Implements ``on_after_backward`` (doing nothing), which makes ``GANModule`` take Lightning's
    backward / optimizer-step wrappers: ``--hooked`` measures what those wrappers cost."""

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass

"""Where bf16-mixed time goes on the 32x32 SN-GAN CNN: torch.profiler op table, fp32 vs bf16 autocast.

Usage: python benchmarks/profile_bf16.py [threads] [iterations]
Profiles one D step (G forward without grad, D forward + backward on real and fake) and one G step of the
paper's standard CNN at 32x32, width 64, batch 64, and prints, per aten op, self CPU ms per iteration in fp32
and in bf16 autocast, so the op that makes bf16 slower can be read off directly; then times the bare kernels
(a 2048x2048 matmul and a 3x3 conv on tensors already in bf16, no autocast casts) to separate kernel speed from casts.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from repro.nets import StandardCNNDiscriminator, StandardCNNGenerator


def iteration(g: torch.nn.Module, d: torch.nn.Module, real: torch.Tensor, bf16: bool) -> None:
    """One D step and one G step (gradients only; the optimizer step is precision-independent)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            fake = g(torch.randn(64, 128))
        (d(real).mean() - d(fake).mean()).backward()
        d(g(torch.randn(64, 128))).mean().backward()


def op_times(threads: int, iters: int, bf16: bool) -> dict[str, float]:
    """Self CPU ms per iteration of each aten op (1 warm-up iteration first)."""
    torch.manual_seed(0)
    g = StandardCNNGenerator(z_dim=128, image_size=32, channels=3, width=64)
    d = StandardCNNDiscriminator(image_size=32, channels=3, width=64)
    real = torch.rand(64, 3, 32, 32) * 2 - 1
    iteration(g, d, real, bf16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            iteration(g, d, real, bf16)
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        times[event.key] += event.self_cpu_time_total / 1e3 / iters
    return times


def best_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


@torch.no_grad()
def kernel_times() -> None:
    """fp32 vs pure-bf16 kernels (inputs and weights already bf16: no cast inside the timing)."""
    a = torch.randn(2048, 2048)
    conv, x = torch.nn.Conv2d(64, 64, 3, padding=1), torch.randn(64, 64, 32, 32)
    conv_bf16 = torch.nn.Conv2d(64, 64, 3, padding=1).bfloat16()
    for name, f32, b16 in (
        ("matmul 2048x2048", lambda: a @ a, (lambda ab: lambda: ab @ ab)(a.bfloat16())),
        ("conv 3x3 64->64, 64x32x32", lambda: conv(x), (lambda xb: lambda: conv_bf16(xb))(x.bfloat16())),
    ):
        t32, t16 = best_ms(f32), best_ms(b16)
        print(f"kernel {name:<28} fp32 {t32:7.1f} ms  bf16 {t16:7.1f} ms  bf16 speed-up {t32 / t16:.2f}x")


def main(threads: int = 2, iters: int = 3) -> None:
    torch.set_num_threads(threads)
    fp32, bf16 = op_times(threads, iters, False), op_times(threads, iters, True)
    print(f"threads {threads}, {iters} iterations; total self CPU ms/iteration: "
          f"fp32 {sum(fp32.values()):.1f}, bf16 {sum(bf16.values()):.1f}")
    print(f"{'op':<48} {'fp32 ms':>9} {'bf16 ms':>9} {'bf16-fp32':>10}")
    for op in sorted(set(fp32) | set(bf16), key=lambda k: -max(fp32.get(k, 0), bf16.get(k, 0)))[:22]:
        a, b = fp32.get(op, 0.0), bf16.get(op, 0.0)
        print(f"{op:<48} {a:9.1f} {b:9.1f} {b - a:+10.1f}")
    kernel_times()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

"""Benchmarks: ``repro bench`` (repro vs a bare-PyTorch reference loop) and the reference itself."""
from repro.bench.harness import WORKLOADS, bench_one, main
from repro.bench.reference import ReferenceLoop

__all__ = ["WORKLOADS", "ReferenceLoop", "bench_one", "main"]

"""``repro bench ensemble``: cost per model update of a K-seed ensemble against K separate runs.

For every workload and K, each round runs (alternately, so slow drifts of the machine's load hit both)
``--parallel`` ensemble processes (``repro fit --ensemble K``, distinct seeds) side by side, then the
``K * parallel`` separate ``repro fit`` processes ``--parallel`` at a time, as the table runner runs
them. Every process has one thread (``OMP_NUM_THREADS=1``), so both sides use the same cores.
Reported per side: steady-state core-seconds per model update (the median step time after ``--warmup``
steps, from a timing callback inside each process, divided by the members it trains) and whole-process
core-seconds per model update (start-up, data, final evaluation included). One step of the ensemble
also goes through ``FlopCounterMode``: its FLOP/s over ``peak_gflops`` (a large fp32 matmul measured
here) is the share of this machine's peak the workload reaches.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from repro import REPO_ROOT
from repro.bench.summary import machine_description
from repro.errors import UserError

__all__ = ["StepTimer", "ENSEMBLE_WORKLOADS", "peak_gflops", "main"]

_PACGAN = ["--model.init_args.generator", "configs/nets/pacgan_g.yaml",
           "--model.init_args.discriminator", "configs/nets/pacgan_d.yaml"]
_METZ = ["--data.dataset", "stacked-mnist", "--data.num_samples", "8192", "--data.batch_size", "64",
         "--model.init_args.generator", "configs/nets/metz_g.yaml",
         "--model.init_args.discriminator", "configs/nets/metz_d_half.yaml"]
ENSEMBLE_WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "ring8": ("ring8 MLP G/D 3x128, batch 256 (configs/ring8)", []),
    "pacgan": ("PacGAN 2-D nets: G 4x400 + BN, maxout D 3x200x5 (configs/nets/pacgan_*), batch 256", _PACGAN),
    "metz": ("stacked-MNIST Metz nets: G 64/32/16/8 + BN, D 4/8/16 + BN (configs/nets/metz_*), batch 64", _METZ),
}


class StepTimer(L.Callback):
    """Writes ``{"step_seconds": [...], "flops_per_step": n}`` to ``out``: the wall time of every generator
    step after ``warmup`` (``on_train_batch_start`` to ``on_train_batch_end``) and the FLOPs of one step."""

    def __init__(self, out: str, warmup: int = 5):
        self.out, self.warmup = Path(out), warmup
        self.seconds: list[float] = []
        self.flops: int | None = None
        self._t0 = 0.0
        self._counter: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup - 1:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        elapsed = time.perf_counter() - self._t0
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = self._counter.get_total_flops(), None
        elif trainer.global_step > self.warmup:
            self.seconds.append(elapsed)

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.out.write_text(json.dumps({"step_seconds": self.seconds, "flops_per_step": self.flops}))


def peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul on one thread (best of ``repeats``): this machine's practical peak."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def _fit_command(workload: str, variant: str, steps: int, seed: int, members: int | None, folder: Path,
                 warmup: int) -> list[str]:
    timer = {"class_path": "repro.bench.ensemble.StepTimer",
             "init_args": {"out": str(folder / "timing.json"), "warmup": warmup}}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(folder), "name": "", "version": ""}}
    args = [sys.executable, "-m", "repro", "fit", "--config", f"configs/ring8/{variant}.yaml",
            *ENSEMBLE_WORKLOADS[workload][1], "--trainer.max_steps", str(steps), "--seed_everything", str(seed),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
            "--samples.every_n_steps", "0", "--trainer.logger", json.dumps(logger),
            "--trainer.callbacks", json.dumps([timer])]
    return args + (["--ensemble", str(members)] if members else [])


def _run_batch(commands: list[tuple[list[str], Path]], parallel: int) -> list[float]:
    """Run the commands ``parallel`` at a time (one thread each); the wall seconds of each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, walls = list(commands), [], []
    while pending or running:
        while pending and len(running) < parallel:
            cmd, folder = pending.pop(0)
            folder.mkdir(parents=True)
            log = (folder / "stderr.log").open("w")
            running.append((subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=log), time.time(), folder))
        for item in list(running):
            proc, start, folder = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    tail = (folder / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise RuntimeError(f"benchmark run in {folder} failed: {' '.join(tail)}")
                walls.append(time.time() - start)
        time.sleep(0.05)
    return walls


def _side(root: Path, workload: str, variant: str, k: int, ensemble: bool, args: argparse.Namespace,
          tag: str) -> dict[str, float]:
    """One side of one round: core-seconds per model update (steady state and whole process)."""
    if ensemble:
        runs = [(_fit_command(workload, variant, args.steps, p * k, k, root / f"{tag}-e{p}", args.warmup),
                 root / f"{tag}-e{p}") for p in range(args.parallel)]
        members = k
    else:
        runs = [(_fit_command(workload, variant, args.steps, s, None, root / f"{tag}-s{s}", args.warmup),
                 root / f"{tag}-s{s}") for s in range(k * args.parallel)]
        members = 1
    walls = _run_batch(runs, args.parallel)
    timings = [json.loads((folder / "timing.json").read_text()) for _, folder in runs]
    step = statistics.median(s for t in timings for s in t["step_seconds"])
    return {"steady": step / members, "process": sum(walls) / (len(runs) * members * args.steps),
            "step_seconds": step, "flops_per_step": timings[0]["flops_per_step"] or 0}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="repro bench ensemble", description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(ENSEMBLE_WORKLOADS), help=f"comma list of {', '.join(ENSEMBLE_WORKLOADS)}")
    p.add_argument("--variant", default="nsgan", help="registered variant (its configs/ring8 YAML)")
    p.add_argument("--members", default="1,4,8,16", help="comma list of ensemble sizes K")
    p.add_argument("--steps", type=int, default=200, help="generator updates per process")
    p.add_argument("--warmup", type=int, default=20, help="steps before timing")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median of per-round ratios)")
    p.add_argument("--parallel", type=int, default=2, help="processes side by side (cores used)")
    p.add_argument("--out", default=None, help="folder for results.json and table.md")
    args = p.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if unknown := [w for w in workloads if w not in ENSEMBLE_WORKLOADS]:
        raise UserError(f"--workloads: unknown {', '.join(unknown)}; valid: {', '.join(ENSEMBLE_WORKLOADS)}")
    sizes = [int(k) for k in args.members.split(",")]
    if args.warmup + 2 > args.steps or min(sizes) < 1 or args.parallel < 1 or args.rounds < 1:
        raise UserError("need --steps >= --warmup + 2, --members >= 1, --parallel >= 1, --rounds >= 1")
    machine = {**machine_description(), "peak_gflops_fp32_1thread": peak_gflops()}
    started, rows = time.time(), []
    with tempfile.TemporaryDirectory(prefix="repro-bench-ensemble-") as tmp:
        for w in workloads:
            for k in sizes:
                rounds = []
                for r in range(args.rounds):
                    print(f"[bench ensemble] {w} K={k} round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
                    tag = f"{w}-k{k}-r{r}"
                    rounds.append((_side(Path(tmp), w, args.variant, k, True, args, tag),
                                   _side(Path(tmp), w, args.variant, k, False, args, tag)))
                ens, sep = rounds[-1]
                rows.append({
                    "workload": w, "members": k,
                    "ensemble_ms_per_update": 1e3 * statistics.median(e["steady"] for e, _ in rounds),
                    "separate_ms_per_update": 1e3 * statistics.median(s["steady"] for _, s in rounds),
                    "speedup_steady": statistics.median(s["steady"] / e["steady"] for e, s in rounds),
                    "speedup_process": statistics.median(s["process"] / e["process"] for e, s in rounds),
                    "ensemble_peak_share": ens["flops_per_step"] / ens["step_seconds"] / 1e9
                    / machine["peak_gflops_fp32_1thread"],
                    "single_peak_share": sep["flops_per_step"] / sep["step_seconds"] / 1e9
                    / machine["peak_gflops_fp32_1thread"],
                    "load_average_1min": os.getloadavg()[0],
                })
                if args.out:  # after every row, so a stopped benchmark keeps what it measured
                    _write(Path(args.out), argv, machine, workloads, args.variant, rows, started)
    print(_table(rows, machine))


def _write(out: Path, argv: list[str], machine: dict[str, Any], workloads: list[str], variant: str,
           rows: list[dict[str, Any]], started: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {**machine, "load_average_end": os.getloadavg(), "wall_seconds": time.time() - started}
    record = {"command": "repro bench ensemble " + " ".join(argv), "machine": machine,
              "workloads": {w: ENSEMBLE_WORKLOADS[w][0] for w in workloads}, "variant": variant, "summary": rows}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(_table(rows, machine) + "\n")


def _table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [f"Peak (fp32 2048^2 matmul, 1 thread): {machine['peak_gflops_fp32_1thread']:.1f} GFLOP/s", "",
             "| workload | K | ensemble ms/update | separate ms/update | speedup (steady) | speedup (whole process) "
             "| ensemble % of peak | single % of peak | load (1 min) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['members']} | {r['ensemble_ms_per_update']:.2f} | "
                     f"{r['separate_ms_per_update']:.2f} | {r['speedup_steady']:.2f}x | {r['speedup_process']:.2f}x | "
                     f"{100 * r['ensemble_peak_share']:.1f} | {100 * r['single_peak_share']:.1f} | "
                     f"{r.get('load_average_1min', float('nan')):.1f} |")
    return "\n".join(lines)

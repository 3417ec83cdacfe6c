"""PacGAN Table 1 step (the ``pacgan-2d-full`` code protocol), this checkout against an earlier revision.

Usage: python benchmarks/pacgan_step.py [--before REV] [--after-env KEY=VALUE ...] [--block 20] [--rounds 7]
       [--warmup 30] [--out FILE]

Two worker processes, one thread each (``OMP_NUM_THREADS=1``), build the table's run exactly as ``repro
reproduce pacgan-2d-full`` does (``configs/ring8/nsgan.yaml`` and the spec's overrides, read from this
checkout's ``paper_tables/pacgan-2d-full.yaml``; the run's length and curve points are the only changes):
one imports ``repro`` from ``REV`` (``git archive``; default ``main``), one from this checkout. Inside each
``repro fit`` a callback pauses after every generator update and waits for the driver, which then asks
the workers in turn for a block of ``--block`` ``repro`` updates or of ``--block`` iterations of the bare
PyTorch loop (``repro.bench.reference.ReferenceLoop``, this checkout's copy in both trees, over that
tree's networks, losses and optimizers). Only one worker runs at a time and the blocks alternate, so the
machine's load hits all four the same way; per-round ratios are reported as medians. Times are wall and
thread-CPU seconds per update (CPU time counts only this process's own work, so it is the steadier number
on a shared machine); each line of the output gives the 1-minute load average. ``--after-env`` sets
environment variables for this checkout's worker only (with ``--before HEAD``: the effect of a setting,
e.g. glibc's ``MALLOC_MMAP_THRESHOLD_``). Two workers running the same code differ by up to ~3 % (measured
with ``--before HEAD``), so smaller differences are not resolved.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "paper_tables" / "pacgan-2d-full.yaml"
KINDS = ("repro", "ref")


def table_arguments(steps: int) -> list[str]:
    """``repro fit`` arguments of the table's first row at ``steps`` updates (no curve points, no progress bar)."""
    import yaml

    spec = yaml.safe_load(SPEC.read_text())
    row = spec["rows"][0]
    overrides = {**spec["overrides"], **row.get("overrides", {}), "trainer.max_steps": steps,
                 "evaluation.curve_points": 0, "trainer.enable_progress_bar": False}
    args = ["--config", row["config"]]
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, bool)) else str(value)]
    return args


def worker(block_steps: int, warmup: int, rounds: int) -> None:
    """Run the table's ``repro fit`` in this process and time blocks on the driver's request (stdin/stdout)."""
    import lightning as L
    import torch

    from repro.bench.reference import ReferenceLoop
    from repro.fit import ReproCLI

    torch.set_num_threads(1)
    reply = sys.stdout
    sys.stdout = sys.stderr  # the run's own printing must not reach the driver's pipe

    class Blocks(L.Callback):
        def __init__(self, ref: ReferenceLoop, tmp: str) -> None:
            self.ref, self.tmp = ref, tmp
            self.left, self.t0, self.c0 = 0, 0.0, 0.0

        def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
            if trainer.global_step == warmup:
                self.ref.run(warmup)
            if trainer.global_step < warmup:
                return
            if self.left > 0:
                self.left -= 1
                if self.left > 0:
                    return
                self.send(block_steps)
            while True:  # wait for the next order
                order = sys.stdin.readline().split()
                if not order or order[0] == "quit":  # no end-of-run evaluation: leave at once
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    os._exit(0)
                if order[0] == "ref":
                    self.start()
                    self.ref.run(block_steps)
                    self.send(block_steps)
                    continue
                self.start()
                self.left = block_steps
                return

        def start(self) -> None:
            self.t0, self.c0 = time.perf_counter(), time.thread_time()

        def send(self, n: int) -> None:
            wall, cpu = (time.perf_counter() - self.t0) / n, (time.thread_time() - self.c0) / n
            reply.write(json.dumps({"wall": wall, "cpu": cpu}) + "\n")
            reply.flush()

    tmp = tempfile.mkdtemp(prefix="pacgan-step-")
    cli = ReproCLI(args=[*table_arguments(warmup + block_steps * rounds + 10), "--trainer.default_root_dir", tmp,
                         "--trainer.logger.init_args.save_dir", tmp, "--resumable.dirpath", f"{tmp}/in_progress"])
    dm = cli.datamodule
    dm.setup()
    cli.trainer.callbacks.append(Blocks(ReferenceLoop(cli.model, dm.data, dm.batch_size, seed=dm.seed), tmp))
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    cli.trainer.fit(cli.model, datamodule=dm)


def _export(rev: str, into: Path) -> Path:
    """``rev``'s ``repro/`` and ``configs/`` under ``into``, with this checkout's reference loop (the benchmark's
    own code, which mirrors the simultaneous step there too)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "repro", "configs", "pyproject.toml"],
                             check=True, capture_output=True).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "repro" / "bench" / "reference.py").write_text((ROOT / "repro" / "bench" / "reference.py").read_text())
    return into


class Worker:
    def __init__(self, name: str, tree: Path, args: argparse.Namespace, extra_env: dict[str, str]):
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra_env}
        self.name, self.log = name, open(Path(args.tmp) / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--block", str(args.block), "--warmup", str(args.warmup),
             "--rounds", str(args.rounds)],
            cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.receive()

    def receive(self) -> dict[str, float]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker stopped; see {self.log.name}")
        return json.loads(line)

    def ask(self, kind: str) -> dict[str, float]:
        self.proc.stdin.write(f"{kind}\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def driver(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the four (tree, kind) blocks for ``rounds`` rounds; medians and per-round ratios."""
    with tempfile.TemporaryDirectory(prefix="pacgan-step-") as tmp:
        args.tmp = tmp
        before = _export(args.before, Path(tmp) / "before")
        after_env = dict(item.split("=", 1) for item in args.after_env)
        workers = {"before": Worker("before", before, args, {}), "after": Worker("after", ROOT, args, after_env)}
        try:
            times: dict[str, list[dict[str, float]]] = {f"{w}/{k}": [] for w in workers for k in KINDS}
            for r in range(args.rounds):
                for w, k in [(w, k) for w in workers for k in KINDS][:: 1 if r % 2 == 0 else -1]:
                    times[f"{w}/{k}"].append(workers[w].ask(k))
                load = os.getloadavg()[0]
                print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                    f"{key} {1e3 * t[-1]['cpu']:.1f}/{1e3 * t[-1]['wall']:.1f}" for key, t in times.items())
                    + f"  ms cpu/wall  (load {load:.1f})", file=sys.stderr, flush=True)
        finally:
            for w in workers.values():
                w.close()
    return summarize(times, args)


def summarize(times: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> dict[str, Any]:
    def ratio(a: str, b: str, clock: str) -> float:
        return statistics.median(x[clock] / y[clock] for x, y in zip(times[a], times[b]))

    out: dict[str, Any] = {
        "before": args.before, "after_env": args.after_env, "block": args.block, "rounds": args.rounds, "load_average_end": os.getloadavg(),
        "ms_per_update": {key: {c: 1e3 * statistics.median(t[c] for t in ts) for c in ("cpu", "wall")}
                          for key, ts in times.items()},
    }
    for clock in ("cpu", "wall"):
        out[f"speedup_{clock}"] = {"repro": ratio("before/repro", "after/repro", clock),
                                   "ref": ratio("before/ref", "after/ref", clock)}
        out[f"framework_share_{clock}"] = {w: 1 - 1 / ratio(f"{w}/repro", f"{w}/ref", clock) for w in ("before", "after")}
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="main", help="git revision to compare against (default: main)")
    p.add_argument("--after-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for this checkout's worker only (repeatable)")
    p.add_argument("--block", type=int, default=20, help="updates per timed block")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    p.add_argument("--warmup", type=int, default=30, help="updates before timing")
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.block, args.rounds, args.warmup) < 1:
        raise SystemExit("--block, --rounds and --warmup must be >= 1")
    if bad := [item for item in args.after_env if "=" not in item]:
        raise SystemExit(f"--after-env takes KEY=VALUE, got {bad}")
    if args.worker:
        worker(args.block, args.warmup, args.rounds)
        return
    summary = driver(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

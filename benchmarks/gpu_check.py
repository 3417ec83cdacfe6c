"""The prepared check for a lent GPU machine: one short script that smoke-tests every variant config, times the
SN-GAN paper configs and runs one DDP fit, printing everything and writing it as JSON (README, "When a GPU is lent").

Usage (on the device machine, from the repository root; ``tools/gpu_check.sh`` wraps it):
    python3 benchmarks/gpu_check.py --out $OUT [--accelerator gpu] [--configs GLOB] [--steps 20] [--time-steps 60]

1. Smoke: every ``configs/mnist/*.yaml`` (one per variant) trains ``--steps`` generator updates in fp32 and in
   bf16-mixed on scikit-learn's digits at 28x28 (labelled, bundled, so no download), in this process; a config
   passes when it trains and its last losses are finite. WGAN-TS is skipped where POT is not installed.
2. Throughput: the SN-GAN paper configs (standard CNN setting A and ResNet, CIFAR-10 shapes, batch 64, n_dis 5) on
   random 32x32x3 stand-in images, fp32 and bf16-mixed: milliseconds per generator iteration over the last
   ``--time-steps`` iterations (CUDA synchronised only at the window's two ends) and the implied hours for the
   paper's 100K updates.
3. DDP: ``repro fit`` of the ring8 NS-GAN config with ``--trainer.strategy ddp`` in a subprocess (one GPU here:
   world size 1, NCCL), and its record's status.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from repro import REPO_ROOT
from repro.callbacks.evaluation import FinalEvaluation
from repro.callbacks.samples import SamplePlots
from repro.fit import ReproCLI

PRECISIONS = ("32-true", "bf16-mixed")
PAPER_CONFIGS = ("configs/sngan/cifar10_cnn_A.yaml", "configs/sngan/cifar10_resnet.yaml")
NEEDS = {"wgants": "ot"}  # a config stem -> the module it needs that the device image may lack


def _sync(accelerator: str) -> None:
    if accelerator == "gpu":
        torch.cuda.synchronize()


class IterationTimer(L.Callback):
    """Wall time of the last ``window`` training steps (one generator iteration each), synchronised at both ends."""

    def __init__(self, accelerator: str, warmup: int):
        self.accelerator, self.warmup, self.calls, self.start, self.seconds = accelerator, warmup, 0, 0.0, 0.0

    def on_train_batch_end(self, *args: Any) -> None:
        self.calls += 1
        if self.calls == self.warmup:
            _sync(self.accelerator)
            self.start = time.perf_counter()

    def on_train_end(self, *args: Any) -> None:
        _sync(self.accelerator)
        self.seconds = time.perf_counter() - self.start


def _fit(config: Path, precision: str, steps: int, accelerator: str, tmp: Path, extra: list[str],
         timer: IterationTimer | None = None) -> dict[str, Any]:
    """Build a run as ``repro fit`` would (without its sample figures and final evaluation) and train it."""
    cli = ReproCLI(args=[
        "--config", str(config), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
        "--trainer.max_steps", str(steps), "--trainer.precision", precision,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp), *extra,
    ])
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, (SamplePlots, FinalEvaluation))]
    if timer is not None:
        cli.trainer.callbacks.append(timer)
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    losses = {k: float(v) for k, v in cli.model.last_losses.items()}
    return {"seconds": round(time.perf_counter() - started, 2), "losses": losses,
            "finite": all(torch.isfinite(torch.tensor(v)) for v in losses.values()),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if accelerator == "gpu" else None}


def _attempt(label: str, run: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``run()``'s result, or the error it raised (one failure does not stop the check), or "not run" once the
    check has used ``args.budget`` seconds; printed either way."""
    if time.perf_counter() - args.started > args.budget:
        print(f"[gpu-check] {label}: not run (over the {args.budget} s budget)", flush=True)
        return {"ok": None, "skipped": f"over the {args.budget} s budget"}
    try:
        result = run()
        result = {"ok": result.pop("ok", result.get("finite", True)), **result}
    except Exception as err:  # the check reports every failure and carries on
        result = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=-3)}
    print(f"[gpu-check] {label}: {'ok' if result['ok'] else 'FAILED'} "
          f"{json.dumps({k: v for k, v in result.items() if k not in ('ok', 'trace')})}", flush=True)
    return result


def smoke(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Every variant config for ``args.steps`` updates per precision on digits at 28x28."""
    out: dict[str, Any] = {}
    for config in sorted((REPO_ROOT / "configs" / "mnist").glob(args.configs)):
        needed = NEEDS.get(config.stem)
        for precision in PRECISIONS:
            label = f"smoke {config.stem} {precision}"
            if needed and not _importable(needed):
                out[label] = {"ok": None, "skipped": f"module {needed!r} is not installed here"}
                print(f"[gpu-check] {label}: skipped ({out[label]['skipped']})", flush=True)
                continue
            out[label] = _attempt(label, lambda: _fit(config, precision, args.steps, args.accelerator, tmp, [
                "--data.dataset", "digits", "--data.image_size", "28", "--evaluation.image_metrics", "false"]), args)
    return out


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _stand_in_folder(root: Path, n: int = 1280) -> Path:
    """``n`` random 32x32 RGB PNGs in 10 class folders: CIFAR-10's shape, not its content."""
    from PIL import Image

    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for i, image in enumerate(images.numpy()):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """ms per generator iteration of the SN-GAN paper configs, and hours for their 100K updates."""
    root = _stand_in_folder(tmp / "stand_in")
    out: dict[str, Any] = {}
    for name in args.paper_configs.split(","):
        for precision in PRECISIONS:
            timer = IterationTimer(args.accelerator, warmup=args.warmup)

            def run() -> dict[str, Any]:
                result = _fit(REPO_ROOT / name, precision, args.warmup + args.time_steps, args.accelerator, tmp, [
                    "--data.dataset", "image_folder", "--data.data_root", str(root), "--data.image_size", "32",
                    "--evaluation.image_metrics", "false", *args.throughput_args], timer)
                ms = 1e3 * timer.seconds / args.time_steps
                return {**result, "ms_per_generator_iteration": round(ms, 2),
                        "hours_per_100k_updates": round(ms * 100_000 / 3.6e6, 2)}

            out[f"throughput {Path(name).stem} {precision}"] = _attempt(f"throughput {name} {precision}", run, args)
    return out


def ddp(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One ``repro fit`` with the DDP strategy in a subprocess: its return code and its record's status."""
    run_dir = tmp / "ddp"
    command = ["-m", "repro", "fit", "--config", "configs/ring8/nsgan.yaml", "--trainer.accelerator", args.accelerator,
               "--trainer.devices", "1", "--trainer.strategy", "ddp", "--trainer.max_steps", str(args.ddp_steps),
               "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir"]

    def run() -> dict[str, Any]:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *command, str(run_dir)], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=600)
        records = list(run_dir.rglob("metrics.json"))
        status = json.loads(records[0].read_text()).get("status") if records else None
        return {"ok": proc.returncode == 0 and status == "finished", "returncode": proc.returncode,
                "status": status, "seconds": round(time.perf_counter() - started, 1),
                "command": " ".join(["python3", *command, "<tmp>"]), "output_tail": (proc.stdout + proc.stderr)[-3000:]}

    return {"ddp ring8 nsgan": _attempt("ddp ring8 nsgan", run, args)}


def machine(accelerator: str) -> dict[str, Any]:
    """What the numbers depend on: device, driver, library versions."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__,
                            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "accelerator": accelerator}
    if accelerator == "gpu":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["nvidia_smi"] = smi.stdout.strip()
    return info


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--accelerator", default="gpu", choices=("gpu", "cpu"), help="cpu: try the script here")
    p.add_argument("--configs", default="*.yaml", help="glob over configs/mnist for the smoke test")
    p.add_argument("--steps", type=int, default=20, help="generator updates per smoke run")
    p.add_argument("--warmup", type=int, default=10, help="iterations before the throughput window")
    p.add_argument("--time-steps", type=int, default=60, help="iterations in the throughput window")
    p.add_argument("--parts", default="smoke,throughput,ddp", help="comma list of smoke, throughput, ddp")
    p.add_argument("--ddp-steps", type=int, default=200, help="generator updates of the DDP run")
    p.add_argument("--paper-configs", default=",".join(PAPER_CONFIGS), help="comma list of configs to time")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds after which the remaining items are recorded as not run (the device call's limit)")
    p.add_argument("throughput_args", nargs="*", help="extra `repro fit` arguments for the throughput runs, after --")
    args = p.parse_args(argv)
    unknown = set(args.parts.split(",")) - {"smoke", "throughput", "ddp"}
    if unknown:
        p.error(f"--parts: unknown {', '.join(sorted(unknown))}; valid: smoke, throughput, ddp")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        p.error("no CUDA device is visible; on a CPU machine pass --accelerator cpu")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.started = time.perf_counter()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": "python3 benchmarks/gpu_check.py " + " ".join(argv),
                              "machine": machine(args.accelerator)}
    print(f"[gpu-check] machine: {json.dumps(report['machine'])}", flush=True)
    parts = {"smoke": smoke, "throughput": throughput, "ddp": ddp}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for part in args.parts.split(","):
            report[part] = parts[part](args, Path(tmp))
            report["failed"] = [k for p in parts if p in report for k, v in report[p].items() if v.get("ok") is False]
            report["wall_seconds"] = round(time.perf_counter() - args.started, 1)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=2))  # after each part: a timeout keeps it
    print(f"[gpu-check] {report['wall_seconds']} s; failed: {report['failed'] or 'none'}", flush=True)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``repro bench``: steady-state cost of one generator iteration, repro vs the bare-PyTorch reference.

For each (workload, variant, precision) one ``repro`` training run is started from the variant's YAML
config. After ``warmup`` iterations a callback (``repro.bench.timing.Alternation``) alternates, inside
that same process, blocks of ``block`` repro iterations with blocks of the reference loop
(``repro.bench.reference.ReferenceLoop``) at every requested precision; ``rounds`` such rounds give
per-round ratios whose median is reported (``repro.bench.summary``), so slow drifts of the machine's load
cancel. One more iteration of each is run under ``torch.profiler`` for peak memory. Micro-benchmarks of
single pieces (a D step with SN / GP, a metric extractor) are scripts in ``benchmarks/``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from repro import REPO_ROOT
from repro.bench.reference import ReferenceLoop
from repro.bench.summary import machine_description, summarize, table
from repro.bench.timing import SHORT, Alternation, BenchResult, StepHookListener
from repro.callbacks import FinalEvaluation, SamplePlots
from repro.console import quiet_library_noise
from repro.errors import UserError
from repro.fit import ReproCLI
from repro.variants import VARIANTS, GANModule

__all__ = ["WORKLOADS", "STACKED_MNIST", "PRECISIONS", "Workload", "build_run", "bench_one", "config_path", "main"]

PRECISIONS = ("32-true", "bf16-mixed")
_CNN32 = ["image_size", "32", "channels", "3", "width", "64"]


@dataclass(frozen=True)
class Workload:
    """A config folder plus overrides (and per-variant ones); ``stand_in`` makes random in-memory data when set."""

    folder: str
    description: str
    overrides: tuple[str, ...] = ()
    stand_in: Callable[[int], Tensor] | None = None
    variant_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _random_images(n: int) -> Tensor:
    """Random uint8 32x32x3 images: a stand-in with CIFAR-10's shape, not real data."""
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _net_overrides(net: str, pairs: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for key, value in zip(pairs[::2], pairs[1::2]):
        out += [f"--model.init_args.{net}.init_args.{key}", value]
    return tuple(out)


# PacGAN Table 1's code protocol as paper_tables/pacgan-2d-full.yaml overrides it (minus its length and
# evaluation settings); tests/test_bench.py checks that these equal the spec's.
PACGAN_CODE = (
    "--model.init_args.generator", str(REPO_ROOT / "configs/nets/pacgan_code_g.yaml"),
    "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/pacgan_code_d.yaml"),
    "--model.init_args.updates", "simultaneous", "--model.init_args.lr_g", "1.0e-4", "--model.init_args.lr_d", "1.0e-4",
    "--model.init_args.betas_g", "[0.8, 0.999]", "--model.init_args.betas_d", "[0.8, 0.999]",
    "--model.init_args.lr_decay", "none", "--data.batch_size", "100", "--data.num_samples", "100000",
    "--trainer.log_every_n_steps", "1000",
)

# paper_tables/stacked-mnist.yaml's nsgan-half row (its data, nets, optimizer and loop; not its length or evaluation).
STACKED_MNIST = (
    "--data.dataset", "stacked-mnist", "--data.batch_size", "128",
    "--model.init_args.generator", str(REPO_ROOT / "configs/nets/metz_g.yaml"),
    "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/metz_d_half.yaml"),
    "--model.init_args.lr_g", "1.0e-4", "--model.init_args.betas_g", "[0.5, 0.99]",
    "--model.init_args.betas_d", "[0.5, 0.99]", "--model.init_args.updates", "shared_z",
)

# the stacked-MNIST table's rows whose variant refuses a batch-normed D (SN-GAN, GN-GAN; WGAN-GP's per-sample penalty)
_METZ_D_WITHOUT_BN = ("--model.init_args.discriminator.init_args.batch_norm", "false")

WORKLOADS: dict[str, Workload] = {
    "mlp": Workload("ring8", "2-D MLP on ring8 (configs/ring8, batch 256)"),
    "mnist": Workload("mnist", "MNIST standard CNN, width 16 (configs/mnist, batch 64)"),
    "metz": Workload("mnist", "stacked-MNIST Metz nets, D = 1/2 G (paper_tables/stacked-mnist.yaml, batch 128)",
                     STACKED_MNIST, variant_overrides={v: _METZ_D_WITHOUT_BN for v in ("sngan", "gngan", "wgangp")}),
    "cnn32": Workload(
        "mnist",
        "SN-GAN standard CNN 32x32x3, width 64, batch 64, RANDOM stand-in images (configs/mnist hyper-parameters)",
        _net_overrides("generator", _CNN32) + _net_overrides("discriminator", _CNN32),
        _random_images,
    ),
    "pacgan": Workload(
        "ring8",
        "PacGAN Table 1 code protocol (paper_tables/pacgan-2d-full.yaml): G 4x400 ReLU+BN, maxout D 3x200x5, "
        "simultaneous updates, Adam, batch 100",
        PACGAN_CODE,
    ),
}


def config_path(workload: str, variant: str) -> Path:
    """The variant's YAML for a workload; one clear error if that workload has none."""
    path = REPO_ROOT / "configs" / WORKLOADS[workload].folder / f"{variant}.yaml"
    if not path.exists():
        raise UserError(f"no config {path.relative_to(REPO_ROOT)} for variant {variant!r} in workload {workload!r}")
    return path


class _BenchCLI(ReproCLI):
    """``ReproCLI`` that puts a workload's stand-in data in place before the data/network shape check."""

    def __init__(self, stand_in: Callable[[int], Tensor] | None, **kwargs: Any):
        self._stand_in = stand_in
        super().__init__(**kwargs)

    def after_instantiate_classes(self) -> None:
        if self._stand_in is not None:
            self.datamodule.data = self._stand_in(self.datamodule.batch_size * self.model.n_dis * 16)
        super().after_instantiate_classes()


def build_run(
    workload: str, variant: str, precision: str, max_steps: int, out_dir: Path, extra: tuple[str, ...] = ()
) -> ReproCLI:
    """A repro run as ``repro fit --config configs/<folder>/<variant>.yaml`` would build it, minus the
    end-of-run figures and evaluation (not part of an iteration) and without progress bar/checkpoints."""
    w = WORKLOADS[workload]
    cli = _BenchCLI(
        w.stand_in,
        args=[
            "--config", str(config_path(workload, variant)),
            "--trainer.max_steps", str(max_steps),
            "--trainer.precision", precision,
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_checkpointing", "false",
            "--trainer.default_root_dir", str(out_dir),
            "--trainer.logger.init_args.save_dir", str(out_dir),
            *w.overrides,
            *w.variant_overrides.get(variant, ()),
            *extra,
        ],
    )
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, (SamplePlots, FinalEvaluation))]
    cli.datamodule.setup()
    return cli


def bench_one(
    workload: str,
    variant: str,
    precision: str,
    reference_precisions: tuple[str, ...],
    warmup: int,
    block: int,
    rounds: int,
    extra: tuple[str, ...] = (),
    hooked: bool = False,
) -> BenchResult:
    """One repro run at ``precision`` alternating with reference loops at ``reference_precisions``
    (``hooked``: with a callback listening to the step hooks, so Lightning's step wrappers run)."""
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        cli = build_run(workload, variant, precision, warmup + block * rounds + 1, Path(tmp), extra)
        model: GANModule = cli.model
        dm = cli.datamodule
        result = BenchResult(workload, variant, precision, dm.batch_size * model.n_dis)
        guests = {
            f"ref-{SHORT[p]}": ReferenceLoop(model, dm.data, dm.batch_size, p, dm.seed, cli.trainer.max_steps)
            for p in reference_precisions
        }
        cli.trainer.callbacks.append(Alternation(result, guests, warmup, block, rounds))
        if hooked:
            cli.trainer.callbacks.append(StepHookListener())
        cli.trainer.fit(model, datamodule=dm)
        result.finite = all(bool(torch.isfinite(v).all()) for v in model.last_losses.values())
    return result


def _csv(value: str, valid: tuple[str, ...] | list[str], key: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise UserError(f"--{key}: unknown value(s) {bad or value!r}; valid: {', '.join(valid)}")
    return items


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="repro bench", description=__doc__.split("\n")[0])
    p.add_argument("--workloads", default="mlp,mnist,cnn32", help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--variants", default="vanilla,nsgan,lsgan,wgan,wgangp", help="comma list of registered variants")
    p.add_argument("--precisions", default="32-true,bf16-mixed", help=f"comma list of {', '.join(PRECISIONS)}")
    p.add_argument("--warmup", type=int, default=5, help="iterations before timing (each of repro and reference)")
    p.add_argument("--block", type=int, default=5, help="iterations per timed block")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (median of per-round ratios)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--hooked", action="store_true", help="add a callback listening to the step hooks (Lightning's wrappers run)")
    p.add_argument("--out", default=None, help="folder for results.json (command, machine, raw timings) and table.md")
    p.add_argument("extra", nargs="*", help="extra `repro fit` arguments after --, e.g. -- --model.init_args.compile_nets true")
    args = p.parse_args(argv)
    for key in ("warmup", "block", "rounds"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(args, key)}")
    return args


def main(argv: list[str]) -> None:
    """Run the benchmark, print the table, and write it with the machine description to ``--out``."""
    args = parse_args(argv)
    workloads = _csv(args.workloads, list(WORKLOADS), "workloads")
    variants = _csv(args.variants, list(VARIANTS), "variants")
    precisions = _csv(args.precisions, PRECISIONS, "precisions")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_library_noise(banners=True)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is not a LightningDataLoader.*")
    machine = machine_description()
    results: list[BenchResult] = []
    failures: dict[str, str] = {}
    started = time.time()
    for w in workloads:
        for v in variants:
            for prec in precisions:
                print(f"[bench] {w} / {v} / {prec} ...", file=sys.stderr, flush=True)
                try:
                    results.append(
                        bench_one(w, v, prec, tuple(precisions), args.warmup, args.block, args.rounds, tuple(args.extra), args.hooked)
                    )
                except (UserError, ValueError, RuntimeError) as err:  # one variant failing does not stop the table
                    failures[f"{w}/{v}/{prec}"] = f"{type(err).__name__}: {err}"
                    print(f"[bench] {w} / {v} / {prec} failed: {failures[f'{w}/{v}/{prec}']}", file=sys.stderr)
    rows = summarize(results)
    text = table(rows)
    for key, message in failures.items():
        text += f"\n\nFAILED {key}: {message}"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        machine["load_average_end"] = os.getloadavg()
        machine["wall_seconds"] = time.time() - started
        record = {
            "command": "repro bench " + " ".join(argv),
            "machine": machine,
            "workloads": {w: WORKLOADS[w].description for w in workloads},
            "summary": rows,
            "failures": failures,
            "raw": [r.__dict__ for r in results],
        }
        (out / "results.json").write_text(json.dumps(record, indent=2))
        (out / "table.md").write_text(text + "\n")
        print(f"[bench] wrote {out / 'results.json'} and {out / 'table.md'}", file=sys.stderr)

"""``repro bench``: steady-state cost of one generator iteration, repro vs the bare-PyTorch reference.

For each (workload, variant, precision) one ``repro`` training run is started from the variant's YAML
config. After ``warmup`` iterations a callback alternates, inside that same process, blocks of
``block`` repro iterations with blocks of the reference loop (``ReferenceLoop``) at every requested
precision; ``rounds`` such rounds give per-round ratios whose median is reported, so slow drifts of
the machine's load cancel. One more iteration of each is run under ``torch.profiler`` for peak memory.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from repro.bench.reference import ReferenceLoop, autocast_context
from repro.callbacks import FinalEvaluation, SamplePlots
from repro.cli import REPO_ROOT, ReproCLI, UserError
from repro.losses import hinge_d_loss
from repro.nets import StandardCNNDiscriminator
from repro.regularizers import GradientPenalty
from repro.variants import VARIANTS, GANModule

__all__ = [
    "WORKLOADS",
    "PRECISIONS",
    "BenchResult",
    "bench_one",
    "d_step_costs",
    "extractor_throughput",
    "main",
    "machine_description",
]

PRECISIONS = ("32-true", "bf16-mixed")
_SHORT = {"32-true": "fp32", "bf16-mixed": "bf16"}
_CNN32 = ["image_size", "32", "channels", "3", "width", "64"]


@dataclass(frozen=True)
class Workload:
    """A config folder plus overrides; ``stand_in`` makes random in-memory data when set."""

    folder: str
    description: str
    overrides: tuple[str, ...] = ()
    stand_in: Callable[[int], Tensor] | None = None


def _random_images(n: int) -> Tensor:
    """Random uint8 32x32x3 images: a stand-in with CIFAR-10's shape, not real data."""
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _net_overrides(net: str, pairs: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for key, value in zip(pairs[::2], pairs[1::2]):
        out += [f"--model.init_args.{net}.init_args.{key}", value]
    return tuple(out)


WORKLOADS: dict[str, Workload] = {
    "mlp": Workload("ring8", "2-D MLP on ring8 (configs/ring8, batch 256)"),
    "mnist": Workload("mnist", "MNIST standard CNN, width 16 (configs/mnist, batch 64)"),
    "cnn32": Workload(
        "mnist",
        "SN-GAN standard CNN 32x32x3, width 64, batch 64, RANDOM stand-in images (configs/mnist hyper-parameters)",
        _net_overrides("generator", _CNN32) + _net_overrides("discriminator", _CNN32),
        _random_images,
    ),
}


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


class _Alternation(L.Callback):
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


class _StepHookListener(L.Callback):
    """Implements ``on_after_backward`` (doing nothing), which makes ``GANModule`` take Lightning's
    backward / optimizer-step wrappers: ``--hooked`` measures what those wrappers cost."""

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass


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
            f"ref-{_SHORT[p]}": ReferenceLoop(model, dm.data, dm.batch_size, p, dm.seed, cli.trainer.max_steps)
            for p in reference_precisions
        }
        cli.trainer.callbacks.append(_Alternation(result, guests, warmup, block, rounds))
        if hooked:
            cli.trainer.callbacks.append(_StepHookListener())
        cli.trainer.fit(model, datamodule=dm)
        result.finite = all(bool(torch.isfinite(v).all()) for v in model._last.values())
    return result


def d_step_costs(
    precisions: tuple[str, ...], block: int, rounds: int, batch: int = 64, width: int = 64
) -> list[dict[str, Any]]:
    """Milliseconds per discriminator step of the SN-GAN standard CNN (32x32x3, width 64, hinge loss,
    Adam) on random stand-in batches: plain, spectral norm (Miyato et al. 2018, Alg. 1) and plain +
    gradient penalty (Gulrajani et al. 2017, eq. 3), at each precision. All (precision, kind) pairs
    alternate within every round; ratios are per round against plain (and against fp32 for bf16)."""
    gen = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(batch, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    penalty = GradientPenalty(10.0)

    def make_step(norm: str, with_gp: bool, precision: str) -> Callable[[], None]:
        net = StandardCNNDiscriminator(32, 3, width, norm=norm)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        critic = SimpleNamespace(discriminate=net)

        def step() -> None:
            with autocast_context(precision):
                loss = hinge_d_loss(net(real), net(fake))
                if with_gp:
                    loss = loss + penalty(critic, real, fake)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    kinds = {"plain": ("none", False), "spectral": ("spectral", False), "gp": ("none", True)}
    steps = {(p, k): make_step(*spec, p) for p in precisions for k, spec in kinds.items()}
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for key, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(block):
                step()
            seconds[key].append((time.perf_counter() - t0) / block)

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b))

    rows = []
    for p in precisions:
        row = {
            "precision": p,
            "ms": {k: 1e3 * statistics.median(seconds[p, k]) for k in kinds},
            "vs_plain": {k: ratio(seconds[p, k], seconds[p, "plain"]) for k in kinds},
            "raw_seconds": {k: seconds[p, k] for k in kinds},
        }
        if p != "32-true" and "32-true" in precisions:
            row["speedup_vs_fp32"] = {k: ratio(seconds["32-true", k], seconds[p, k]) for k in kinds}
        rows.append(row)
    return rows


def extractor_throughput(name: str, n_images: int, batch_size: int = 500, repeats: int = 3) -> dict[str, Any]:
    """Images/s of a metric feature extractor through repro's batched ``inference_mode`` extraction path,
    on random uint8 28x28 stand-in images (throughput does not depend on content)."""
    from repro.metrics.features import make_extractor
    from repro.metrics.image import _extract

    extractor = make_extractor(name)
    images = torch.randint(0, 256, (n_images, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    _extract(extractor, images[:batch_size], batch_size)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _extract(extractor, images, batch_size)
        seconds.append(time.perf_counter() - t0)
    return {"extractor": name, "images": n_images, "batch_size": batch_size, "images_per_s": n_images / statistics.median(seconds)}


def machine_description() -> dict[str, Any]:
    """Cores, CPU, library versions, thread settings and load: what the numbers depend on."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": os.getloadavg(),
    }


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def summarize(results: list[BenchResult]) -> list[dict[str, Any]]:
    """One row per (workload, variant): fp32 and bf16 ratios, speed-ups, samples/s and peak memory."""
    rows: list[dict[str, Any]] = []
    for key in dict.fromkeys((r.workload, r.variant) for r in results):
        by_prec = {r.precision: r for r in results if (r.workload, r.variant) == key}
        row: dict[str, Any] = {"workload": key[0], "variant": key[1]}
        for prec, r in by_prec.items():
            s = _SHORT[prec]
            ref = f"ref-{s}"
            row[f"{s}_ms_repro"] = 1e3 * r.median("repro")
            row[f"{s}_samples_per_s"] = r.samples_per_iteration / r.median("repro")
            row[f"{s}_finite"] = r.finite
            row[f"{s}_peak_mb_repro"] = r.peak_mb.get("repro")
            if ref in r.seconds:
                row[f"{s}_ms_ref"] = 1e3 * r.median(ref)
                row[f"{s}_ratio"] = r.ratio("repro", ref)
                row[f"{s}_peak_mb_ref"] = r.peak_mb.get(ref)
            if r.reference_error:
                row["reference_error"] = r.reference_error
        r32, r16 = by_prec.get("32-true"), by_prec.get("bf16-mixed")
        if r16 is not None and "ref-fp32" in r16.seconds and "ref-bf16" in r16.seconds:
            pooled = [r for r in (r32, r16) if r is not None]
            row["bf16_speedup_ref"] = statistics.median(
                a / b for r in pooled for a, b in zip(r.seconds["ref-fp32"], r.seconds["ref-bf16"])
            )
            if r32 is not None and "ref-fp32" in r32.seconds:
                # repro32/repro16 = (repro32/ref32 in the fp32 run) * (ref32/repro16 in the bf16 run)
                row["bf16_speedup_repro"] = r32.ratio("repro", "ref-fp32") * r16.ratio("ref-fp32", "repro")
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the summary rows."""
    head = (
        "| workload | variant | fp32 ms/it repro | fp32 ms/it ref | repro/ref fp32 | samples/s fp32 | peak MB repro / ref "
        "| bf16 ms/it repro | repro/ref bf16 | bf16 speed-up repro | bf16 speed-up ref | bf16 finite |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['variant']} | {_fmt(r.get('fp32_ms_repro'), '.2f')} | {_fmt(r.get('fp32_ms_ref'), '.2f')} "
            f"| {_fmt(r.get('fp32_ratio'), '.3f')} | {_fmt(r.get('fp32_samples_per_s'), '.0f')} "
            f"| {_fmt(r.get('fp32_peak_mb_repro'), '.1f')} / {_fmt(r.get('fp32_peak_mb_ref'), '.1f')} "
            f"| {_fmt(r.get('bf16_ms_repro'), '.2f')} | {_fmt(r.get('bf16_ratio'), '.3f')} "
            f"| {_fmt(r.get('bf16_speedup_repro'), '.2f')} | {_fmt(r.get('bf16_speedup_ref'), '.2f')} "
            f"| {r.get('bf16_finite', 'n/a')} |"
        )
    return "\n".join(lines)


def d_step_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| D step, SN-GAN CNN 32x32 w64 b64 | plain ms | spectral norm ms (x plain) | gradient penalty ms (x plain) "
        "| speed-up vs fp32 (plain / SN / GP) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ms, x, up = r["ms"], r["vs_plain"], r.get("speedup_vs_fp32")
        ups = " / ".join(f"{up[k]:.2f}" for k in ("plain", "spectral", "gp")) if up else "-"
        lines.append(
            f"| {_SHORT[r['precision']]} | {ms['plain']:.1f} | {ms['spectral']:.1f} ({x['spectral']:.3f}) "
            f"| {ms['gp']:.1f} ({x['gp']:.3f}) | {ups} |"
        )
    return "\n".join(lines)


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
    p.add_argument("--d-step-costs", action="store_true", help="also time a 32x32 CNN D step: plain / spectral norm / GP")
    p.add_argument("--extractor", default="none", help="also time a metric feature extractor: classifier, inception or none")
    p.add_argument("--extractor-images", type=int, default=5000, help="images for the extractor timing")
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
    if args.extractor != "none":
        _csv(args.extractor, ["classifier", "inception"], "extractor")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
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
    d_steps = d_step_costs(tuple(precisions), args.block, args.rounds) if args.d_step_costs else []
    if d_steps:
        text += "\n\n" + d_step_table(d_steps)
    extractor = extractor_throughput(args.extractor, args.extractor_images) if args.extractor != "none" else None
    if extractor:
        text += (
            f"\n\nFeature extractor `{extractor['extractor']}`: {extractor['images_per_s']:.0f} images/s "
            f"({extractor['images']} images, batch {extractor['batch_size']}, inference_mode)"
        )
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
            "d_step_costs": d_steps,
            "extractor": extractor,
            "failures": failures,
            "raw": [r.__dict__ for r in results],
        }
        (out / "results.json").write_text(json.dumps(record, indent=2))
        (out / "table.md").write_text(text + "\n")
        print(f"[bench] wrote {out / 'results.json'} and {out / 'table.md'}", file=sys.stderr)

"""Each critic's W1 estimate at one fixed generator: WGAN, WGAN-GP and WGAN-TS critics trained from scratch against
the same frozen G, measured on the same batch pairs, each curve judged by the tables' flattening rules.

    python tools/critic_fit_check.py OUT_DIR CKPT [CKPT ...] [--critics CFG ...] [--updates 1000] [--every 50]
        [--pairs 8] [--seeds 0,1,2]

The `icml2018-methods` table compares critics inside their own runs, each against its own generator, and WGAN-TS's
critic / exact-W1 ratio falls as its G improves (results/diagnostics/wgants-regression-fit/): a ratio there mixes
the critic's accuracy with the generator's distance from the data. Here the generator is held fixed (each CKPT's G,
a `repro fit` checkpoint, e.g. a committed `final_state/last.ckpt`; in train mode, as the runs' critics saw it), and
for each critic config (default: the table's `configs/mnist/wgan.yaml`, `wgangp.yaml`, `wgants.yaml`) and seed a
fresh critic, built and initialised as that config's run builds it (``seed_everything`` = the seed), is trained by
the variant's own D update (``GANModule.d_step``: WGAN's clipped RMSprop step, WGAN-GP's penalised Adam step,
WGAN-TS's LP + 5 regression steps) for ``--updates`` D updates on uniformly drawn real batches of the config's size.
Every ``--every`` updates the critic is measured as the table's trace measures it (``BatchW1Trace.measure``: D in eval
mode; ratio of mean D(x) - mean D(G(z)) to the exact batch W1 in the L1 and the L2 cost) on ``--pairs`` fixed pairs of
(real batch, fresh fakes), the same pairs for every critic, seed and update. A critic's own ratio is WGAN-TS's against
L1 (its LP's cost) and WGAN-GP's against L2 (its penalty's norm); WGAN's clipped critic is K-Lipschitz for an
unknown K, so its ratio shows that scale. Each curve is judged by the tables' flattening rule
(``repro.tables.curves.trend``: the last 20% of the updates) and by its change from half the updates to all (the
tables' doubling check), each against 5% of the final mean (or ``--floor``) by two standard errors over the seeds.
Writes OUT_DIR/check.json (every point, the command, each checkpoint's SHA-256), OUT_DIR/curves.png, and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from repro.callbacks.w1 import BatchW1Trace
from repro.checkpoints import net_from_checkpoint
from repro.console import quiet_library_noise
from repro.data.images import load_images
from repro.data.module import default_data_root
from repro.fit import build_cli
from repro.pixels import to_float
from repro.tables.curves import REL_TOL, RowCurve, Trend, trend
from repro.variants.base import GANModule

CRITICS = ("configs/mnist/wgan.yaml", "configs/mnist/wgangp.yaml", "configs/mnist/wgants.yaml")
OWN_COST = {"WGAN": "l1", "WGANGP": "l2", "WGANTS": "l1"}  # the ratio each critic is read by (WGAN: no own norm)
PAIR_SEED = 10_000


def build_critic(config: str, seed: int, generator: torch.nn.Module) -> tuple[GANModule, torch.optim.Optimizer, int]:
    """The config's model with a fresh critic (initialised under ``seed``), ``generator`` in place of its own G
    (frozen), D's optimizer as the run makes it, and the config's batch size."""
    cli = build_cli(["--config", config, "--seed_everything", str(seed), "--trainer.logger", "false"])
    module = cli.model
    module.generator = generator
    module._lean_steps = True  # no trainer: plain backward and optimizer steps (GANModule.manual_backward)
    hp = module.hparams
    opt_d = module.make_optimizer(module.discriminator.parameters(), hp.lr_d, tuple(hp.betas_d))
    return module, opt_d, cli.datamodule.batch_size


def measure(module: GANModule, images: Tensor, pairs: int, batch: int) -> dict[str, float]:
    """``BatchW1Trace.measure`` averaged over ``pairs`` fixed (real batch, fakes) pairs (seeded apart from training)."""
    trace, values = BatchW1Trace(), []
    for p in range(pairs):
        with torch.random.fork_rng():
            torch.manual_seed(PAIR_SEED + p)
            real = to_float(images[torch.randint(len(images), (batch,))])
            values.append(trace.measure(module, real))
    return {k: statistics.fmean(v[k] for v in values) for k in values[0]}


def fit_curve(config: str, seed: int, generator: torch.nn.Module, images: Tensor, args: argparse.Namespace
              ) -> dict[str, Any]:
    """One critic trained for ``args.updates`` D updates; its measurements every ``args.every`` updates."""
    module, opt_d, batch = build_critic(config, seed, generator)
    draw = torch.Generator().manual_seed(seed)
    points, seconds = [], 0.0
    for update in range(args.updates + 1):
        if update % args.every == 0:
            points.append({"updates": update, "train_seconds": seconds, **measure(module, images, args.pairs, batch)})
            print(f"  {Path(config).stem} seed {seed}: {update} updates, critic/L1 {points[-1]['critic_over_l1']:.3g}, "
                  f"critic/L2 {points[-1]['critic_over_l2']:.3g}", flush=True)
        if update < args.updates:
            real = to_float(images[torch.randint(len(images), (batch,), generator=draw)])
            start = time.perf_counter()
            module.d_step(real, opt_d)
            seconds += time.perf_counter() - start
    return {"config": config, "variant": type(module).__name__, "seed": seed, "batch_size": batch, "points": points}


def _judged(judged: Trend | None) -> dict[str, Any]:
    keys = ("state", "change", "se", "tolerance")
    return dict.fromkeys(keys) if judged is None else {k: getattr(judged, k) for k in keys}


def own_curve(runs: list[dict[str, Any]]) -> tuple[str, RowCurve]:
    """A critic's runs (one per seed) as the row curve of its own ratio (``critic_over_<own cost>``), and that key."""
    key = f"critic_over_{OWN_COST[runs[0]['variant']]}"
    steps = [p["updates"] for p in runs[0]["points"]]
    seeds = [[p[key] for p in run["points"]] for run in runs]
    mean = [statistics.fmean(col) for col in zip(*seeds)]
    std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*seeds)]
    return key, RowCurve(steps, mean, std, [s[-1] for s in seeds], seeds=seeds)


def summary(runs: list[dict[str, Any]], floor: float) -> dict[str, Any]:
    """A critic's own ratio over seeds: final mean, std and standard error; the tables' flattening rule on its last
    20% (``tail``), and its change from half the updates to all of them (``doubling``: the tables' doubling check,
    since the first half of a run is the shorter run), each with the seeds' standard error."""
    key, curve = own_curve(runs)
    steps, seeds, finals, mean = curve.steps, curve.seeds, curve.finals, curve.mean
    half = steps.index(steps[-1] // 2) if steps[-1] // 2 in steps else None
    doubling = None
    if half is not None and half > 0:
        changes = [s[-1] - s[half] for s in seeds]
        doubling = Trend(statistics.fmean(changes), max(REL_TOL * abs(mean[-1]), floor),
                         se=statistics.stdev(changes) / math.sqrt(len(changes)) if len(changes) > 1 else None,
                         n=len(changes), from_steps=steps[half], to_steps=steps[-1])
    spread = statistics.stdev(finals) if len(finals) > 1 else None
    return {"variant": runs[0]["variant"], "cost": key.rsplit("_", 1)[1], "n": len(finals), "mean": mean[-1],
            "std": spread,
            "se": None if spread is None else spread / math.sqrt(len(finals)),
            "tail": _judged(trend(curve, floor=floor)),
            "doubling": _judged(doubling),
            "exact_l1": statistics.fmean(run["points"][-1]["exact_l1"] for run in runs),
            "exact_l2": statistics.fmean(run["points"][-1]["exact_l2"] for run in runs),
            "seconds_per_update": statistics.fmean(run["points"][-1]["train_seconds"] for run in runs)
            / max(steps[-1], 1)}


def _shown(judged: dict[str, Any]) -> str:
    if judged["state"] is None:
        return "—"
    se = f" ± {judged['se']:.4f}" if judged["se"] else ""
    return f"{judged['state']} ({judged['change']:+.4f}{se}; tolerance {judged['tolerance']:.4f})"


def draw(results: list[dict[str, Any]], out: Path) -> None:
    """One panel per generator: each critic's own ratio against D updates, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        for runs in res["critics"].values():
            key, curve = own_curve(runs)
            line, = ax.plot(curve.steps, curve.mean, label=f"{runs[0]['variant']} (over {key[-2:].upper()})")
            ax.fill_between(curve.steps, [m - s for m, s in zip(curve.mean, curve.std)],
                            [m + s for m, s in zip(curve.mean, curve.std)], color=line.get_color(), alpha=0.2)
        ax.set(title=f"G of {res['label']} (exact L1 W1 {res['exact_l1']:.0f})", xlabel="critic (D) updates",
               ylabel="critic estimate / exact batch W1 (own cost)")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--critics", nargs="+", default=list(CRITICS))
    parser.add_argument("--updates", type=int, default=1000, help="D updates per critic")
    parser.add_argument("--every", type=int, default=50, help="measure every this many D updates")
    parser.add_argument("--pairs", type=int, default=8, help="fixed (real, fake) batch pairs per measurement")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--floor", type=float, default=0.0,
                        help="the flattening tolerance's absolute floor (default 0: 5%% of the final mean alone)")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.every < 1 or args.updates % args.every:
        parser.error("--updates and --every must be >= 1, --updates a multiple of --every")
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet_library_noise(banners=True)  # one model build per run: no per-build banners

    images, _ = load_images("mnist", default_data_root(), download=False)
    results = []
    for path in args.checkpoints:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        generator = net_from_checkpoint(ckpt, "generator").train().requires_grad_(False)
        critics = {c: [fit_curve(c, s, generator, images, args) for s in seeds] for c in args.critics}
        results.append({"checkpoint": path.as_posix(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "label": "/".join(path.parts[-4:-2]), "generator_steps": ckpt.get("global_step"),
                        "exact_l1": statistics.fmean(r["points"][-1]["exact_l1"] for r in critics[args.critics[0]]),
                        "critics": critics, "summary": {c: summary(runs, args.floor) for c, runs in critics.items()}})
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python tools/critic_fit_check.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    (args.out / "check.json").write_text(json.dumps({"command": command, "results": results}, indent=1) + "\n")
    draw(results, args.out / "curves.png")
    print(f"| generator | critic | own cost | critic / exact W1 (own cost) after {args.updates} D updates, mean ± std "
          "(n) | last 20% (change ± s.e.) | half → all updates (change ± s.e.) | s per D update |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for s in res["summary"].values():
            spread = f" ± {s['std']:.4f}" if s["std"] is not None else ""
            print(f"| {res['label']} | {s['variant']} | {s['cost'].upper()} | {s['mean']:.4f}{spread} (n={s['n']}) | "
                  f"{_shown(s['tail'])} | {_shown(s['doubling'])} | {s['seconds_per_update']:.3f} |")


if __name__ == "__main__":
    main()

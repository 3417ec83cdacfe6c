"""Micro-benchmarks of single pieces of an iteration (``repro bench`` times whole iterations):

- ``d-step``: milliseconds per discriminator step of the SN-GAN standard CNN, plain / spectral norm /
  gradient penalty, at fp32 and bf16-mixed;
- ``extractor``: images per second of a metric feature extractor (``classifier`` or ``inception``).

Usage: python benchmarks/micro.py d-step [--block 5] [--rounds 7] [--precisions 32-true,bf16-mixed]
       python benchmarks/micro.py extractor [--extractor classifier] [--images 5000]
Prints a markdown table or one line; ``--out FILE`` also writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from repro.bench.reference import autocast_context
from repro.bench.summary import machine_description
from repro.bench.timing import SHORT
from repro.losses import hinge_d_loss
from repro.metrics.features import EXTRACTORS, make_extractor
from repro.metrics.image import extract_features
from repro.nets import StandardCNNDiscriminator
from repro.regularizers import GradientPenalty


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
        critic = SimpleNamespace(discriminate=net, sample_noise=lambda draw, n: draw(n), batch_mean=torch.mean)

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
    extractor = make_extractor(name)
    images = torch.randint(0, 256, (n_images, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    extract_features(extractor, images[:batch_size], batch_size)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_features(extractor, images, batch_size)
        seconds.append(time.perf_counter() - t0)
    return {"extractor": name, "images": n_images, "batch_size": batch_size, "images_per_s": n_images / statistics.median(seconds)}



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
            f"| {SHORT[r['precision']]} | {ms['plain']:.1f} | {ms['spectral']:.1f} ({x['spectral']:.3f}) "
            f"| {ms['gp']:.1f} ({x['gp']:.3f}) | {ups} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("d-step", "extractor"))
    p.add_argument("--precisions", default="32-true,bf16-mixed", help="d-step: comma list of 32-true, bf16-mixed")
    p.add_argument("--block", type=int, default=5, help="d-step: steps per timed block")
    p.add_argument("--rounds", type=int, default=7, help="d-step: alternating rounds")
    p.add_argument("--extractor", default="classifier", choices=sorted(EXTRACTORS))
    p.add_argument("--images", type=int, default=5000, help="extractor: images to embed")
    p.add_argument("--out", default=None, help="JSON file for the numbers and the machine description")
    args = p.parse_args(argv)
    if args.what == "d-step":
        rows = d_step_costs(tuple(args.precisions.split(",")), args.block, args.rounds)
        print(d_step_table(rows))
        numbers: Any = rows
    else:
        numbers = extractor_throughput(args.extractor, args.images)
        print(f"Feature extractor `{numbers['extractor']}`: {numbers['images_per_s']:.0f} images/s "
              f"({numbers['images']} images, batch {numbers['batch_size']}, inference_mode)")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine_description(), args.what: numbers}, indent=2))


if __name__ == "__main__":
    main()

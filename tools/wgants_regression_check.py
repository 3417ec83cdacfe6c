"""How far WGAN-TS's step 2 takes its critic towards the LP potentials of one batch, at a trained run's weights.

    python tools/wgants_regression_check.py OUT.json CKPT [CKPT ...] [--steps 5,50,500] [--lrs 1e-4,1e-3] [--batches 4]

For each checkpoint (a `repro fit` checkpoint of a WGAN-TS MNIST run, e.g. a committed `final_state/last.ckpt`),
``--batches`` pairs of (64 real training digits, 64 fakes of the final G) are drawn (seed 0). On each, step 1 (the
exact L1 LP, ``repro.metrics.transport.exact_w1``) gives the potentials; then, from the run's final critic and with
a fresh Adam (betas of the run's config; the run's own optimizer keeps its moments, so this is the first few steps of
a restart, not of the run), step 2's loss (``WGANTS.regression_loss``: the MSE onto the potentials + lambda times the
optimal-transport term) is minimised for up to max(``--steps``) steps, each ``--lrs`` learning rate on its own copy.
Recorded after each count in ``--steps``: the MSE term, the OT term (divided by lambda), and the critic's estimate
mean D(x) - mean D(y) on the regressed batch over the LP value (1 = the potentials' W1), and the same ratio on a
fresh pair of batches (the `w1/critic_over_l1` the table's trace logs). Writes OUT.json (values, command, each
checkpoint's SHA-256) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from repro.checkpoints import net_from_checkpoint
from repro.data.images import load_images
from repro.metrics.transport import exact_w1, l1_cost
from repro.pixels import to_float
from repro.variants.wgants import WGANTS

BATCH = 64


def _ratio(model: WGANTS, real: Tensor, fake: Tensor, lp_value: float) -> float:
    with torch.no_grad():
        return float(model.discriminate(real).mean() - model.discriminate(fake).mean()) / lp_value


def _terms(model: WGANTS, real: Tensor, fake: Tensor, target: Tensor, direction: Tensor) -> dict[str, float]:
    """Step 2's two terms, apart (``regression_loss`` = mse + ot_weight * ot)."""
    full = float(model.regression_loss(real, fake, target, direction).detach())
    ot_weight = model.ot_weight
    model.ot_weight = 0.0
    mse = float(model.regression_loss(real, fake, target, direction).detach())
    model.ot_weight = ot_weight
    return {"mse": mse, "ot": (full - mse) / ot_weight}


def check(path: Path, steps: list[int], lrs: list[float], batches: int, images: Tensor) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    init = ckpt["repro_config"]["model"]["init_args"]
    generator, critic = net_from_checkpoint(ckpt, "generator").eval(), net_from_checkpoint(ckpt, "discriminator")
    model = WGANTS(generator, critic, ot_weight=init.get("ot_weight", 10.0))
    betas = tuple(init.get("betas_d", (0.5, 0.999)))
    gen = torch.Generator().manual_seed(0)

    def pair() -> tuple[Tensor, Tensor]:
        real = to_float(images[torch.randint(len(images), (BATCH,), generator=gen)])
        with torch.no_grad():
            fake = generator(torch.randn(BATCH, generator.z_dim, generator=gen))
        return real, fake

    rows = []
    for b in range(batches):
        real, fake = pair()
        fresh_real, fresh_fake = pair()
        sol = exact_w1(l1_cost(real, fake))
        fresh_lp = exact_w1(l1_cost(fresh_real, fresh_fake)).value
        target = torch.cat([sol.phi, sol.psi]).to(real)
        direction = torch.sign(real[sol.match] - fake)
        for lr in lrs:
            model.discriminator = copy.deepcopy(critic)
            opt = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)
            done = 0
            for k in [0, *steps]:
                for _ in range(k - done):
                    opt.zero_grad(set_to_none=True)
                    model.regression_loss(real, fake, target, direction).backward()
                    opt.step()
                done = k
                rows.append({"batch": b, "lr": lr, "steps": k, "lp_value": sol.value,
                             **_terms(model, real, fake, target, direction),
                             "ratio_regressed_batch": _ratio(model, real, fake, sol.value),
                             "ratio_fresh_batch": _ratio(model, fresh_real, fresh_fake, fresh_lp)})
    return {"checkpoint": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "generator_steps": ckpt.get("global_step"), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--steps", default="5,50,500", help="regression step counts to record (comma-separated)")
    parser.add_argument("--lrs", default="1e-4,1e-3", help="Adam learning rates (comma-separated)")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    images, _ = load_images("mnist", Path(os.environ.get("REPRO_DATA_DIR", "../shared/data")), download=False)
    steps = sorted(int(s) for s in args.steps.split(","))
    lrs = [float(v) for v in args.lrs.split(",")]
    results = [check(p, steps, lrs, args.batches, images) for p in args.checkpoints]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python tools/wgants_regression_check.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    args.out.write_text(json.dumps({"command": command, "results": results}, indent=1) + "\n")
    print("| checkpoint | lr | steps | MSE term | OT term / lambda | critic / LP (regressed batch) "
          "| critic / LP (fresh batch) |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for lr in lrs:
            for k in [0, *steps]:
                sel = [r for r in res["rows"] if r["lr"] == lr and r["steps"] == k]
                mean = {key: sum(r[key] for r in sel) / len(sel) for key in
                        ("mse", "ot", "ratio_regressed_batch", "ratio_fresh_batch")}
                print(f"| {res['checkpoint']} | {lr:g} | {k} | {mean['mse']:.1f} | {mean['ot']:.1f} | "
                      f"{mean['ratio_regressed_batch']:.3f} | {mean['ratio_fresh_batch']:.3f} |")


if __name__ == "__main__":
    main()

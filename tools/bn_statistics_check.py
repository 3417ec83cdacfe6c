"""Mode metrics of a 2-D run's final generator under three choices of its batch-norm statistics.

    python tools/bn_statistics_check.py OUT.json CKPT [CKPT ...] [--batches 50] [--batch-size 100] [--n-samples 2500]

For each checkpoint (a `repro fit` checkpoint of a 2-D mixture run: its stamped config names G and the data set),
``--n-samples`` samples (evaluation seed 1234, drawn as the final evaluation draws them) are scored with
- ``running``: the running averages training kept (what `evaluation.bn_standing_batches: 0` evaluates);
- ``standing``: statistics re-estimated at the final weights, the cumulative average over ``--batches`` batches of
  fresh latents (what `evaluation.bn_standing_batches` evaluates; ``repro.ema.standing_statistics``);
- ``pacgan_refresh``: the running averages updated with their own momentum over ``--batches`` batches at the final
  weights, as PacGAN's code's per-epoch monitoring pass does before it draws its evaluation samples.
Writes OUT.json (the values, the command, each checkpoint's SHA-256) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.checkpoints import net_from_checkpoint
from repro.data.toy import Geometry, make_toy
from repro.ema import standing_statistics
from repro.metrics.toy import mode_metrics

SEED = 1234


def _refreshed(net: nn.Module, batches: int, batch_size: int, z_dim: int) -> nn.Module:
    """PacGAN's monitoring pass: ``batches`` train-mode passes at the layers' own momentum, weights fixed."""
    net = copy.deepcopy(net).train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(batches):
            net(torch.randn(batch_size, z_dim, generator=gen))
    return net


def _scores(net: nn.Module, mixture: Any, z_dim: int, n: int) -> dict[str, float]:
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(SEED)
        samples = net.eval()(torch.randn(n, z_dim))
    return {f"{k}_{n}": v for k, v in mode_metrics(samples, mixture).items()}


def check(path: Path, batches: int, batch_size: int, n: int) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    data = ckpt["repro_config"]["data"]
    geometry = Geometry(**data["mixture"]) if data.get("mixture") else None
    _, _, mixture = make_toy(data["dataset"], 10, 0, geometry)
    net = net_from_checkpoint(ckpt, "generator")
    z_dim = ckpt["repro_config"]["model"]["init_args"]["generator"]["init_args"]["z_dim"]
    standing = copy.deepcopy(net)
    standing_statistics(standing, z_dim, torch.device("cpu"), n_batches=batches, batch_size=batch_size)
    return {"checkpoint": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "generator_steps": ckpt.get("global_step"), "dataset": data["dataset"],
            "running": _scores(net, mixture, z_dim, n), "standing": _scores(standing, mixture, z_dim, n),
            "pacgan_refresh": _scores(_refreshed(net, batches, batch_size, z_dim), mixture, z_dim, n)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-samples", type=int, default=2500)
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        parser.error(f"no such checkpoint: {', '.join(missing)}")
    rows = [check(p, args.batches, args.batch_size, args.n_samples) for p in args.checkpoints]
    command = "python tools/bn_statistics_check.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "batches": args.batches, "batch_size": args.batch_size,
                                    "n_samples": args.n_samples, "seed": SEED, "runs": rows}, indent=2) + "\n")
    print("| checkpoint | statistics | modes | high quality % | reverse KL | JSD |\n|---|---|---|---|---|---|")
    for row in rows:
        for kind in ("running", "standing", "pacgan_refresh"):
            m, n = row[kind], args.n_samples
            print(f"| {row['checkpoint']} | {kind} | {m[f'modes_{n}']} | {100 * m[f'high_quality_{n}']:.2f}"
                  f" | {m[f'reverse_kl_{n}']:.3f} | {m[f'jsd_{n}']:.4f} |")


if __name__ == "__main__":
    main()

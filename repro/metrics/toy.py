"""Mode metrics for 2-D Gaussian mixtures (Srivastava et al. 2017, VEEGAN Sec. 5.1; Lin et al. 2018, PacGAN Table 1)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from repro.data.toy import ToyMixture
from repro.metrics.registry import EvalContext, Measured

__all__ = ["mode_metrics", "evaluate"]


def mode_metrics(samples: Tensor, mixture: ToyMixture, n_std: float = 3.0) -> dict[str, float]:
    """Modes covered, share of high-quality samples, reverse KL and JSD to the uniform mode distribution.

    VEEGAN Sec. 5.1: a sample is high quality if it lies within ``n_std`` standard deviations
    (Euclidean distance / std) of its nearest mode centre; a mode is covered if it is the nearest
    centre of at least one high-quality sample. PacGAN Table 1: reverse KL = KL(p_hat || U_K)
    = log K - H(p_hat), with p_hat the histogram of high-quality samples over modes. ``jsd`` is what
    PacGAN's code logs beside it (`pacgan/extensions.py`, MetricLogger): JSD(p_hat, U_K) =
    ½ KL(p_hat || m) + ½ KL(U_K || m), m = (p_hat + U_K) / 2, natural log, so at most log 2. Table 1's
    column is the KL, not the JSD: its GAN grid entry 0.70 exceeds log 2 = 0.693.
    """
    centers = mixture.centers.to(samples)
    dist, nearest = torch.cdist(samples.float(), centers).min(dim=1)
    hq = dist <= n_std * mixture.std
    k = len(centers)
    counts = torch.bincount(nearest[hq], minlength=k).double()
    covered = int((counts > 0).sum())
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p[p > 0]
        reverse_kl = float((nz * (nz.log() + math.log(k))).sum())
        m = (p + 1.0 / k) / 2
        jsd = 0.5 * float((nz * (nz / m[p > 0]).log()).sum()) + 0.5 * float(((1.0 / k) * ((1.0 / k) / m).log()).sum())
    else:
        reverse_kl, jsd = float("inf"), float("nan")
    return {"modes": covered, "high_quality": float(hq.double().mean()), "reverse_kl": reverse_kl, "jsd": jsd}


def evaluate(ctx: EvalContext) -> Measured:
    """The ``toy_modes`` family: mode metrics of ``n_samples`` samples drawn after ``manual_seed(seed)``."""
    n, seed = ctx.settings.n_samples, ctx.settings.seed
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fake = ctx.sample(n).float().cpu()
    values = {f"{k}_{n}": v for k, v in mode_metrics(fake, ctx.datamodule.mixture).items()}
    protocol = {"n_generated": n, "weights": ctx.weights, "seed": seed, "n_std": 3.0,
                "definition": "VEEGAN Sec. 5.1 / PacGAN Table 1"}
    return values, {k: protocol for k in values}

"""Stacked-MNIST mode metrics (Srivastava et al. 2017, VEEGAN Sec. 5.2; Lin et al. 2018, PacGAN Table 2).

Each of the three channels of a generated image is labelled by the MNIST classifier; the mode of the
image is its digit triple (1,000 possible). Reported: the number of distinct triples found, and
KL(p_hat || U_1000) with p_hat the histogram of triples over the samples (PacGAN's ``KLD(p, q)`` with
p the generated histogram: a reverse KL).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from repro.metrics.features import FeatureExtractor, make_extractor
from repro.metrics.image import PREPROCESSING, count_name, to_uint8
from repro.metrics.registry import EvalContext, Measured

__all__ = ["digit_triples", "stacked_mode_metrics", "evaluate", "N_TRIPLES"]

N_TRIPLES = 1000


@torch.inference_mode()
def digit_triples(images: Tensor, classifier: FeatureExtractor) -> Tensor:
    """uint8 images (N, 3, H, W) -> (N, 3) digits, each channel classified on its own."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"stacked MNIST images must be (N, 3, H, W), got {tuple(images.shape)}")
    n = len(images)
    _, logits = classifier(images.reshape(n * 3, 1, *images.shape[2:]))
    return logits.argmax(1).view(n, 3)


def stacked_mode_metrics(triples: Tensor) -> dict[str, float]:
    """Distinct triples among the samples and the reverse KL of their histogram to the uniform one."""
    codes = triples[:, 0] * 100 + triples[:, 1] * 10 + triples[:, 2]
    counts = torch.bincount(codes, minlength=N_TRIPLES).double()
    p = counts[counts > 0] / counts.sum()
    return {"modes": int((counts > 0).sum()), "kl": float((p * (p.log() + math.log(N_TRIPLES))).sum())}


def evaluate(ctx: EvalContext) -> Measured:
    """The ``stacked_modes`` family: the digit triples of ``n_stacked`` samples, drawn in batches after
    ``manual_seed(seed)``, each channel labelled by the MNIST classifier."""
    st = ctx.settings
    extractor = make_extractor("classifier", st.extractor_weights).to(ctx.device)
    with torch.random.fork_rng():
        torch.manual_seed(st.seed)
        triples = torch.cat([
            digit_triples(to_uint8(ctx.sample(min(st.batch_size, st.n_stacked - i))), extractor).cpu()
            for i in range(0, st.n_stacked, st.batch_size)
        ])
    protocol = {"extractor": "classifier", "extractor_sha256": extractor.sha256, "n_generated": st.n_stacked,
                "preprocessing": PREPROCESSING + ", each channel classified", "weights": ctx.weights,
                "seed": st.seed, "modes_of": N_TRIPLES}
    values = {f"{k}{count_name(st.n_stacked)}_classifier": v for k, v in stacked_mode_metrics(triples).items()}
    return values, {k: protocol for k in values}

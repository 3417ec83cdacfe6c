"""The exact batch W1 between two disjoint batches of real MNIST images: the floor under `BatchW1Trace`'s
``w1/exact_l1`` / ``w1/exact_l2`` (a perfect generator's batch of n samples is still n other images, so its exact W1
to a real batch is this, not 0).

Usage: python benchmarks/batch_w1_floor.py [n] [pairs] [seed]   (REPRO_DATA_DIR: where MNIST lies)
Prints the exact W1 of a real batch to an all-black one (a generator that draws nothing), and the mean ± std over
``pairs`` pairs of disjoint batches of n training images (pixels in [-1, 1], flattened),
in the L1 and the L2 cost, with the LP of WGAN-TS's step 1 (``repro.metrics.transport.exact_w1``).
"""
from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import torch

from repro.data.images import load_images
from repro.metrics.transport import exact_w1, l1_cost
from repro.pixels import to_float


def main(n: int = 64, pairs: int = 100, seed: int = 0) -> None:
    images, _ = load_images("mnist", Path(os.environ.get("REPRO_DATA_DIR", "../shared/data")), download=False)
    pixels = to_float(images).flatten(1)
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, list[float]] = {"l1": [], "l2": []}
    for _ in range(pairs):
        index = torch.randperm(len(pixels), generator=generator)[: 2 * n]
        x, y = pixels[index[:n]], pixels[index[n:]]
        values["l1"].append(exact_w1(l1_cost(x, y)).value)
        values["l2"].append(exact_w1(torch.cdist(x, y, p=2)).value)
    black = (pixels + 1).sum(1)  # L1 distance of each image to the all-black one (-1 everywhere)
    print(f"exact W1 (L1 cost) of a real batch to a batch of all-black images (every plan costs the same): "
          f"{float(black.mean()):.2f} in expectation over the training set")
    for cost, found in values.items():
        print(f"exact W1 ({cost.upper()} cost), two disjoint batches of {n} real MNIST training images, {pairs} pairs "
              f"(seed {seed}): {statistics.fmean(found):.2f} ± {statistics.stdev(found):.2f} (std)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

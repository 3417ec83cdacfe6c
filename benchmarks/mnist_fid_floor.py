"""The classifier FID of real MNIST digits against the test set, as the tables' ``fid5k_test_classifier`` column
measures a generator (n fakes against the 10,000 test digits, this project's MNIST classifier features): what a
generator that drew real digits would score.

Usage: python benchmarks/mnist_fid_floor.py [n] [draws] [seed]   (REPRO_DATA_DIR: where MNIST lies)
Prints, over ``draws`` random draws of n digits, the mean ± std FID against the 10,000 test digits of n *training*
digits (digits the classifier was trained on) and of n *test* digits (a subset of the reference itself, so biased
low), each draw's value, and the classifier's accuracy on each split.
"""
from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from repro.data.images import load_images, load_test_images
from repro.metrics.features import make_extractor
from repro.metrics.image import extract_features, frechet_distance


def _stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = features.numpy()
    return x.mean(0), np.cov(x, rowvar=False)


def main(n: int = 5000, draws: int = 5, seed: int = 0) -> None:
    root = Path(os.environ.get("REPRO_DATA_DIR", "../shared/data"))
    extractor = make_extractor("classifier").eval()
    split = {"train": load_images("mnist", root, download=False), "test": load_test_images("mnist", root, False)}
    test_images = split["test"][0]
    reference = _stats(extract_features(extractor, test_images, 500))
    generator = torch.Generator().manual_seed(seed)
    for name, (images, labels) in split.items():
        with torch.inference_mode():
            logits = torch.cat([extractor(part)[1] for part in images.split(1000)])
        accuracy = (logits.argmax(1) == labels).double().mean().item()
        values = []
        for _ in range(draws):
            index = torch.randperm(len(images), generator=generator)[:n]
            values.append(frechet_distance(*_stats(extract_features(extractor, images[index], 500)), *reference))
        print(f"{name} digits ({n} of {len(images)}, classifier accuracy {accuracy:.4f}) vs the {len(test_images)} test "
              f"digits: FID {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (std over {draws} draws: "
              + ", ".join(f"{v:.2f}" for v in values) + ")")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

"""Per-class metrics of a class-conditional MNIST generator, with the project's MNIST classifier.

For each class k, ``n_per_class`` samples G(z, k) are drawn (batch j of class k after
``manual_seed(seed + 1000 k + j)``), then:

- ``class_acc``: the share the classifier labels k (AC-GAN's measure of class-conditional samples,
  Odena et al. 2017, Sec. 4.1, with the MNIST classifier in place of Inception); reported per class
  (``_cK``), as the mean over classes and as the worst class (``_min``).
- ``intra_fid``: the FID between those samples and the real images of class k in the reference split
  (Miyato & Koyama 2018, Sec. 5: "intra-FID"), classifier features; per class and the mean over classes.

Unconditional models get nothing from this family (their records are unchanged).
"""
from __future__ import annotations

import torch
from torch import Tensor

from repro.data.images import load_test_images
from repro.metrics.features import FeatureExtractor, make_extractor
from repro.metrics.image import (
    PREPROCESSING,
    _mean_cov,
    check_sample_counts,
    count_name,
    frechet_distance,
    reference_features,
    reference_images,
    reference_index,
    to_uint8,
)
from repro.metrics.registry import EvalContext, Measured

__all__ = ["evaluate", "reference_labels", "class_samples"]


def reference_labels(datamodule: object, split: str) -> Tensor:
    """The class labels of ``reference_images(datamodule, split)``, in the same order."""
    if split == "train":
        return datamodule.class_labels
    return load_test_images(datamodule.dataset, datamodule.data_root, datamodule.download)[1]


def _statistics(features: Tensor) -> tuple:
    """Mean and unbiased covariance of float64 ``features`` (N, d)."""
    f = features.double()
    return _mean_cov(f.sum(0), f.T @ f, torch.tensor(len(f)))


@torch.inference_mode()
def class_samples(ctx: EvalContext, extractor: FeatureExtractor, k: int) -> tuple[Tensor, Tensor]:
    """Features and predicted classes of ``n_per_class`` samples of class ``k``."""
    st = ctx.settings
    feats, predicted = [], []
    with torch.random.fork_rng():
        for j, start in enumerate(range(0, st.n_per_class, st.batch_size)):
            torch.manual_seed(st.seed + 1000 * k + j)
            n = min(st.batch_size, st.n_per_class - start)
            f, logits = extractor(to_uint8(ctx.sample(n, y=torch.full((n,), k, dtype=torch.long))).to(ctx.device))
            feats.append(f.double().cpu())
            predicted.append(logits.argmax(1).cpu())
    return torch.cat(feats), torch.cat(predicted)


def evaluate(ctx: EvalContext) -> Measured:
    """The ``per_class`` family (see the module docstring); ``({}, {})`` for an unconditional model."""
    if ctx.num_classes is None:
        return {}, {}
    st, dm = ctx.settings, ctx.datamodule
    extractor = make_extractor("classifier", st.extractor_weights).to(ctx.device)
    images, labels = reference_images(dm, st.reference_split), reference_labels(dm, st.reference_split)
    subset = reference_index(len(images), st.n_reference)
    if subset is not None:
        images, labels = images[subset], labels[subset]
    ref = st.reference_split + ("" if subset is None else count_name(len(images)))
    n = count_name(st.n_per_class)
    acc_key, fid_key = f"class_acc{n}_classifier", f"intra_fid{n}_{ref}_classifier"
    values: dict[str, float] = {}
    for k in range(ctx.num_classes):
        real = images[labels == k]
        check_sample_counts(st.n_per_class, 0, len(real), extractor.num_features, "classifier")
        real_feats = reference_features(real, extractor, f"{dm.dataset}_{st.reference_split}_class{k}", st.batch_size,
                                        st.cache_dir)
        fake_feats, predicted = class_samples(ctx, extractor, k)
        values[f"{acc_key}_c{k}"] = float((predicted == k).double().mean())
        values[f"{fid_key}_c{k}"] = frechet_distance(*_statistics(real_feats), *_statistics(fake_feats))
    accs = [values[f"{acc_key}_c{k}"] for k in range(ctx.num_classes)]
    values[acc_key], values[f"{acc_key}_min"] = sum(accs) / len(accs), min(accs)
    values[fid_key] = sum(values[f"{fid_key}_c{k}"] for k in range(ctx.num_classes)) / ctx.num_classes
    protocol = {"extractor": "classifier", "extractor_sha256": extractor.sha256, "n_per_class": st.n_per_class,
                "classes": ctx.num_classes, "reference_split": st.reference_split, "reference_size": len(images),
                "preprocessing": PREPROCESSING, "weights": ctx.weights, "seed": st.seed}
    return values, {key: protocol for key in values}

"""S2GAN (Lucic et al. 2019, "High-Fidelity Image Generation With Fewer Labels", Sec. 3.1, pre-trained approach,
unsupervised): a class-conditional GAN trained on labels that no one gave, the k-means clusters of
self-supervised features of the training images.

The pre-stage (``prepare``; ``repro prepare``, or ``repro fit`` when its cache is missing) trains a copy of D's
feature body with a linear rotation head on the rotation task of Chen et al. 2019 (``repro.variants.ssgan``'s
rotated quarters and loss; the paper uses a separately trained RotNet), extracts the features of every training
image, clusters them into ``num_classes`` clusters with scikit-learn's KMeans and caches the cluster ids under
``cluster_cache_dir`` (a name derived from the data, D's architecture and the pre-stage settings). The GAN itself
(conditional-BN G, projection D, both starting from their own initialisation) then trains with the cluster ids as
the labels of the real data (``training_labels``); G draws cluster ids uniformly, as a conditional G draws classes.
Cluster k is not class k: per-class metrics are off (``labels_are_classes``) and the data set needs no labels.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.checkpoints import safe_load
from repro.data import GANDataModule
from repro.data.loader import pretrain
from repro.errors import UserError
from repro.nets.conditional import ProjectionDiscriminator
from repro.pixels import to_float
from repro.variants.base import GANModule
from repro.variants.ssgan import RotationDiscriminator, check_rotatable, rotation_loss

__all__ = ["S2GAN", "MissingClusterLabels", "pretrain_rotation", "rotation_features", "cluster_features"]

KMEANS_RESTARTS = 10  # k-means++ initialisations; the best (lowest inertia) clustering is kept


class MissingClusterLabels(FileNotFoundError):
    """The cached cluster labels S2GAN trains on do not exist yet."""


def pretrain_rotation(net: RotationDiscriminator, data: Tensor, steps: int, lr: float, batch_size: int,
                      seed: int) -> float:
    """Train ``net`` (features + rotation head) on the rotation cross-entropy with Adam for ``steps`` batches of
    ``data`` drawn in a ``seed``-ed order; returns the last loss."""
    return pretrain(net, lambda x: rotation_loss(net, x), torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999)),
                    data, steps, batch_size, seed)


@torch.no_grad()
def rotation_features(net: nn.Module, data: Tensor, batch_size: int = 500) -> Tensor:
    """``net.features`` of every item of ``data`` (uint8 images become floats in [-1, 1]) in eval mode, in order."""
    was_training = net.training
    net.eval()
    parts = [net.features(to_float(x) if x.dtype == torch.uint8 else x) for x in data.split(batch_size)]
    net.train(was_training)
    return torch.cat(parts)


def cluster_features(features: Tensor, num_clusters: int, seed: int) -> Tensor:
    """Cluster ids in [0, num_clusters) of the rows of ``features`` by scikit-learn's KMeans (k-means++,
    ``KMEANS_RESTARTS`` restarts, ``random_state=seed``): the same ids for the same features and seed."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise UserError("S2GAN clusters its features with scikit-learn's KMeans, which is not installed; "
                        "install it with `pip install scikit-learn` (repro's dependencies include it)") from None
    if len(features) < num_clusters:
        raise ValueError(f"S2GAN: {len(features)} training items cannot form {num_clusters} clusters; use more data "
                         "(data.num_samples) or fewer classes (model.num_classes)")
    kmeans = KMeans(n_clusters=num_clusters, n_init=KMEANS_RESTARTS, random_state=seed)
    return torch.from_numpy(kmeans.fit_predict(features.double().numpy())).long()


class S2GAN(GANModule, name="s2gan"):
    """Conditional GAN on ``num_classes`` k-means clusters of rotation features (Lucic et al. 2019, Sec. 3.1).

    Args:
        discriminator: a ``repro.nets.ProjectionDiscriminator``; a copy of its feature body is pre-trained.
        num_classes: the number of clusters (the paper: ImageNet's 1000).
        loss: the objective (the paper: hinge).
        rotation_steps, rotation_lr, rotation_batch_size: the rotation pre-training (Adam, betas (0.5, 0.999)).
        cluster_seed: seeds the pre-training's batch order and k-means.
        cluster_cache_dir: folder of the cached cluster ids.
    """

    labels_are_classes = False

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        num_classes: int,
        loss: str = "hinge",
        rotation_steps: int = 2000,
        rotation_lr: float = 2e-4,
        rotation_batch_size: int = 64,
        cluster_seed: int = 0,
        cluster_cache_dir: str = "runs/cluster_cache",
        **kwargs: Any,
    ):
        if rotation_steps < 1 or rotation_batch_size < 4 or not rotation_lr > 0:
            raise ValueError(f"model.rotation_steps must be >= 1, model.rotation_batch_size >= 4 (one image per "
                             f"rotation) and model.rotation_lr > 0, got {rotation_steps}, {rotation_batch_size}, "
                             f"{rotation_lr}")
        if not isinstance(discriminator, ProjectionDiscriminator):
            raise ValueError(f"model.discriminator: S2GAN needs repro.nets.ProjectionDiscriminator around a D (got "
                             f"{type(discriminator).__name__}); see configs/mnist/s2gan.yaml")
        super().__init__(generator, discriminator, loss=loss, num_classes=num_classes, **kwargs)
        self.rotation_steps, self.rotation_lr, self.rotation_batch_size = rotation_steps, rotation_lr, rotation_batch_size
        self.cluster_seed, self.cluster_cache_dir = cluster_seed, cluster_cache_dir

    def cluster_cache_path(self, dm: GANDataModule) -> Path:
        """``<cluster_cache_dir>/<dataset>-<hash>.pt``; the hash covers the data (set, size, subset, toy seed),
        D's feature body (its architecture), the number of clusters and the pre-stage's settings."""
        key = {
            "dataset": dm.dataset, "image_size": dm.image_size, "num_samples": dm.num_samples,
            "toy_seed": dm.seed if dm.is_toy else None, "features": repr(self.discriminator.inner),
            "clusters": self.num_classes, "steps": self.rotation_steps, "lr": self.rotation_lr,
            "batch_size": self.rotation_batch_size, "seed": self.cluster_seed,
        }
        if dm.geometry is not None:  # dataset: mixture
            key["mixture"] = dataclasses.asdict(dm.geometry)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return Path(self.cluster_cache_dir) / f"{dm.dataset}-{digest}.pt"

    def cluster_labels(self, datamodule: GANDataModule) -> tuple[Tensor, float]:
        """The pre-stage: rotation pre-training of a copy of D's feature body, its features of every training item,
        their k-means cluster ids; returns (ids, the last rotation loss)."""
        datamodule.setup()
        check_rotatable(type(self).__name__, tuple(datamodule.data.shape[1:]))
        with torch.random.fork_rng():
            torch.manual_seed(self.cluster_seed)
            net = RotationDiscriminator(copy.deepcopy(self.discriminator.inner))
        final = pretrain_rotation(net, datamodule.data, self.rotation_steps, self.rotation_lr,
                                  self.rotation_batch_size, self.cluster_seed)
        return cluster_features(rotation_features(net, datamodule.data), self.num_classes, self.cluster_seed), final

    def prepare(self, datamodule: GANDataModule) -> str:
        """Run the pre-stage and cache the cluster ids; returns the file."""
        labels, final = self.cluster_labels(datamodule)
        path = self.cluster_cache_path(datamodule)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel runs of one table row may prepare at once
        torch.save({"labels": labels, "rotation_loss": final}, tmp)
        os.replace(tmp, path)
        return str(path)

    def preparation_missing(self, datamodule: GANDataModule) -> str | None:
        path = self.cluster_cache_path(datamodule)
        return None if path.exists() else f"no cluster labels for this data and model.discriminator at {path}"

    def training_labels(self, datamodule: GANDataModule) -> Tensor:
        """The cached cluster ids (the data module checks there is one per training item, in range)."""
        missing = self.preparation_missing(datamodule)
        if missing:
            raise MissingClusterLabels(
                f"S2GAN: {missing}; create it with `repro prepare` followed by the arguments of `repro fit` "
                "(which does this itself when the file is missing)"
            )
        return safe_load(self.cluster_cache_path(datamodule), "model.cluster_cache_dir")["labels"]

    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        check_rotatable(type(self).__name__, sample_shape)
        super().check_sample_shape(sample_shape)

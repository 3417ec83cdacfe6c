"""Feature extractors for FID / KID / IS: each maps uint8 images (N, C, H, W) to (features, logits).

Every extractor does its own resize and input scaling, so generated and real images go through the
same path: model output -> ``to_uint8`` ((x+1)/2, quantized) -> extractor. ``name`` and ``sha256``
(of the weights file) go into every metric's protocol record.

- ``inception``: torch-fidelity's Inception-v3 (the TF 2015-12-05 weights converted), 2048-d pool
  features for FID/KID and the 1008 unbiased logits for IS, TF1-compatible bilinear resize to 299 px;
  the standard protocol of Heusel et al. 2017 / Salimans et al. 2016.
- ``classifier``: repro's own MNIST classifier (``repro.metrics.classifier``), 128-d penultimate
  features and 10 logits, input resized to 28 px.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.checkpoints import safe_load
from repro.metrics.classifier import CLASSIFIER_WEIGHTS, load_classifier, sha256_file
from repro.pixels import to_float

__all__ = [
    "FeatureExtractor",
    "InceptionExtractor",
    "ClassifierExtractor",
    "EXTRACTORS",
    "make_extractor",
    "inception_weights_path",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_URL",
]

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"


class FeatureExtractor(nn.Module):
    """uint8 images -> (features for FID/KID, logits for IS). Frozen, always in eval mode."""

    name: str = ""
    num_features: int = 0
    sha256: str = ""

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` to ``dst`` (torch.hub's downloader, which writes a temp file first)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=False)


def inception_weights_path(path: str | None = None) -> Path:
    """The Inception weights file: ``path``, else ``$REPRO_INCEPTION_WEIGHTS``, else torch.hub's checkpoint
    folder (where torch-fidelity itself caches it). Downloads once if missing; offline, one clear error."""
    given = path or os.environ.get("REPRO_INCEPTION_WEIGHTS")
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"evaluation.extractor_weights (or REPRO_INCEPTION_WEIGHTS): Inception weights file "
                                    f"{given} does not exist; point it at {INCEPTION_WEIGHTS_FILE}")
        return Path(given)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / INCEPTION_WEIGHTS_FILE
    if not target.exists():
        try:
            _download(INCEPTION_URL, target)
        except Exception as err:  # offline: URLError, OSError, HTTPError, ...
            raise FileNotFoundError(
                f"Inception weights {INCEPTION_WEIGHTS_FILE} not found in {folder} and could not be "
                f"downloaded ({type(err).__name__}: {err}). Download {INCEPTION_URL} on a connected "
                f"machine and put the file in {folder} (or set REPRO_INCEPTION_WEIGHTS to its path)."
            ) from None
    return target


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's Inception-v3: 2048-d pool features and 1008 unbiased logits."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights: str | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = inception_weights_path(weights)
        safe_load(path, "Inception weights")  # torch-fidelity loads them with weights_only=False
        self.sha256 = sha256_file(path)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.shape[1] == 1:  # grey sets are tiled to RGB (Lucic et al. 2018's protocol)
            images = images.expand(-1, 3, -1, -1)
        features, logits = self.net(images)
        return features, logits


class ClassifierExtractor(FeatureExtractor):
    """repro's MNIST classifier: 128-d penultimate features and 10 logits of one grey channel."""

    name = "classifier"

    def __init__(self, weights: str | None = None):
        super().__init__()
        self.net, self.sha256 = load_classifier(Path(weights) if weights else CLASSIFIER_WEIGHTS)
        self.num_features = self.net.feature_dim

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.shape[1] != 1:
            raise ValueError(f"the MNIST classifier takes one grey channel, got images of shape {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        features = self.net.features(to_float(x))
        return features, self.net.head(features)


EXTRACTORS: dict[str, type[FeatureExtractor]] = {"inception": InceptionExtractor, "classifier": ClassifierExtractor}


def make_extractor(name: str, weights: str | None = None) -> FeatureExtractor:
    """The extractor called ``name`` (one of ``EXTRACTORS``), loaded from ``weights`` or its default file."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r} (evaluation.extractor); valid: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](weights)

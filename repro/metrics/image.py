"""FID / KID / IS of a generator against a reference set, through torchmetrics, with the protocol recorded.

- Images reach the extractor one way only: model output in [-1, 1] -> ``to_uint8`` ((x+1)/2, rounded
  to uint8, never per-batch min/max rescaling) -> the extractor's own resize. Real images are stored
  as uint8 and go straight to the extractor, so ``to_uint8`` of a real batch in model space gives back
  exactly the stored bytes.
- Each batch is run through the extractor once; its features feed torchmetrics' FID and KID and its
  logits feed torchmetrics' IS (through an identity "feature" module), so no image is kept and the
  network runs once, not three times.
- FID: torchmetrics accumulates float64 sums of features and outer products; torchmetrics 1.9 then
  takes tr((S1 S2)^1/2) from ``torch.linalg.eigvals(S1 @ S2).sqrt()``. Here the distance is taken from
  those accumulated statistics in float64 by symmetric eigendecompositions (``frechet_distance``), equal to
  the ``sqrtm`` computation of Heusel et al. 2017 / pytorch-fid to rounding, so numbers match the standard tools.
- IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over 10 splits of a seeded random
  permutation of the samples (torchmetrics' convention), reported as mean and std over splits. The
  std is the population std (ddof 0), as in Salimans et al.'s code and torch-fidelity (torchmetrics'
  ddof-1 std is rescaled by sqrt((k-1)/k)); the protocol records it as ``is_std_ddof: 0``.
- Sample counts must suit the statistics (``check_sample_counts``): FID needs more samples than
  feature dimensions in each set (n samples span at most n - 1 dimensions, so a smaller set has a
  singular covariance), IS at least two samples per split (a one-sample split scores exactly 1).
- An extractor without logits (``inception-ts``) gives FID and KID only; the protocol then records
  ``n_is: 0``.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, mean and std over 100
  random subsets of 1,000 (or fewer, if fewer samples) per set.
- Reference features are computed once per (data set, split, size, image size, extractor, weights
  checksum) and cached as a tensor file in ``$REPRO_CACHE_DIR/reference_features`` (default
  ``~/.cache/repro/reference_features``) or ``evaluation.cache_dir``. A hit marks the file used; each write
  prunes that folder (``repro.cachefiles.prune``, the resolved-configs cache's policy): feature files not used
  for ``FEATURES_MAX_AGE_DAYS``, then the least recently used while they exceed ``FEATURES_MAX_BYTES`` (one
  50,000-image Inception set is 0.8 GB of float64), never the file just written. Other files there are kept.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from repro.cachefiles import cache_root, mark_used, prune
from repro.checkpoints import safe_load
from repro.data.images import TEST_SETS, load_test_images, resize_uint8
from repro.metrics.features import INCEPTION_WEIGHTS_FILE, FeatureExtractor, default_extractor, make_extractor
from repro.metrics.registry import EvalContext, Measured
from repro.pixels import to_uint8

__all__ = [
    "to_uint8",
    "frechet_distance",
    "FrechetDistance",
    "ImageProtocol",
    "reference_features",
    "reference_images",
    "reference_index",
    "evaluate_images",
    "evaluate",
    "extract_features",
    "count_name",
    "check_sample_counts",
    "default_cache_dir",
    "FEATURES_MAX_AGE_DAYS",
    "FEATURES_MAX_BYTES",
    "PREPROCESSING",
]

PREPROCESSING = "(x+1)/2 -> round to uint8 (clamped to 0..255) -> extractor's own resize"
FEATURES_MAX_AGE_DAYS = 90  # a reference set unused this long is removed (recomputing one costs CPU-hours)
FEATURES_MAX_BYTES = 8 << 30  # then the least recently used go while the folder's feature files exceed this
_FEATURES_STEM = r".+_[0-9a-f]{16}_.+_[0-9a-f]{16}"  # <name>_<images sha256>_<extractor>_<weights sha256>


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) (Heusel et al. 2017, Sec. 3), in float64. For covariances
    (symmetric PSD) the eigenvalues of S1 S2 are those of the symmetric S1^1/2 S2 S1^1/2, so the trace of the root
    is the sum of their square roots, taken with two symmetric eigendecompositions: the value of SciPy's ``sqrtm``
    (pytorch-fid) to rounding, about 4x faster at 2,048 dimensions, with no complex part to drop and no ridge
    needed for singular covariances (round-off negatives are clipped to 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def _mean_cov(total: Tensor, outer: Tensor, n: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance from torchmetrics' float64 running sums."""
    n_ = int(n)
    mean = total / n_
    cov = (outer - n_ * torch.outer(mean, mean)) / (n_ - 1)
    return mean.cpu().numpy(), cov.cpu().numpy()


class FrechetDistance(FrechetInceptionDistance):
    """torchmetrics' FID state (float64 sums over any feature module) with ``frechet_distance`` in float64."""

    def compute(self) -> Tensor:
        if self.real_features_num_samples < 2 or self.fake_features_num_samples < 2:
            raise RuntimeError("FID needs at least two real and two generated samples")
        real = _mean_cov(self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples)
        fake = _mean_cov(self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples)
        return torch.tensor(frechet_distance(*real, *fake), dtype=torch.float64)


class _Given(nn.Module):
    """The 'feature extractor' handed to torchmetrics: features were already extracted."""

    def __init__(self, num_features: int = 0):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass
class ImageProtocol:
    """How the image metrics of one evaluation were measured; stored beside every value."""

    extractor: str
    extractor_sha256: str
    dataset: str
    reference_split: str
    reference_size: int
    reference_full: bool  # the whole split (named "train") or a seeded subset (named "train10k")
    n_fid: int  # generated samples for FID and KID (the first n_fid of one stream)
    n_is: int  # generated samples for IS (the first n_is of the same stream)
    image_size: int
    weights: str  # "ema" or "final": which generator weights were evaluated
    preprocessing: str = PREPROCESSING
    is_splits: int = 10
    is_std_ddof: int = 0  # population std over the splits (Salimans et al. 2016, torch-fidelity)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0


def check_sample_counts(n_fid: int, n_is: int, n_reference: int, num_features: int, extractor: str,
                        is_splits: int = ImageProtocol.is_splits) -> None:
    """Raise one-line ``ValueError`` unless FID's sets (``n_fid`` generated, ``n_reference`` real) have
    more samples than the ``num_features`` feature dimensions and IS has >= 2 samples per split."""
    d = num_features
    if n_fid <= d:
        raise ValueError(f"evaluation.n_fid ({n_fid}) must exceed the {d} dimensions of the {extractor} features "
                         f"(a covariance of fewer samples is singular); set evaluation.n_fid >= {d + 1}")
    if n_reference <= d:
        raise ValueError(f"evaluation: the reference set has {n_reference} images, not more than the {d} dimensions "
                         f"of the {extractor} features (a singular covariance); use >= {d + 1} reference images "
                         "(evaluation.n_reference, data.num_samples)")
    if 0 < n_is < 2 * is_splits:  # 0: an extractor without logits, no IS
        raise ValueError(f"evaluation.n_is ({n_is}) must be >= {2 * is_splits}: IS averages {is_splits} splits and a "
                         "split of one sample scores exactly 1")


def count_name(n: int) -> str:
    """10000 -> '10k', 2500 -> '2500' (as in metric names like fid10k_train_classifier)."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def default_cache_dir() -> Path:
    """``$REPRO_CACHE_DIR/reference_features`` or ``~/.cache/repro/reference_features``."""
    return cache_root() / "reference_features"


def reference_images(datamodule: Any, split: str) -> Tensor:
    """The real uint8 images of ``split``: "train" is the data module's training set as it trains on it;
    "test" is the set's test split (MNIST, CIFAR-10; STL-10's labelled test set) at the same size."""
    datamodule.setup()
    if split == "train":
        return datamodule.data
    if datamodule.dataset not in TEST_SETS:
        raise ValueError(f"evaluation.reference_split: 'test' exists for {', '.join(TEST_SETS)}, not {datamodule.dataset!r}")
    images, _ = load_test_images(datamodule.dataset, datamodule.data_root, datamodule.download)
    return resize_uint8(images, datamodule.image_size).contiguous()


def reference_index(n: int, n_reference: int | None) -> Tensor | None:
    """Which of a reference split's ``n`` images ``evaluation.n_reference`` keeps: a seeded subset, or None (all)."""
    if n_reference is None or n_reference >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_reference]


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.inference_mode()
def extract_features(extractor: FeatureExtractor, images: Tensor, batch_size: int) -> Tensor:
    """Features (float64, on the CPU) of uint8 ``images``, ``batch_size`` at a time."""
    device = _device(extractor)
    return torch.cat([extractor(part.to(device))[0].double().cpu() for part in images.split(batch_size)])


def reference_features(
    images: Tensor, extractor: FeatureExtractor, name: str, batch_size: int = 500, cache_dir: Path | None = None
) -> Tensor:
    """Features (float64, N x d) of the uint8 reference ``images``, cached as
    ``<name>_<sha256 of the image bytes>_<extractor>_<sha256 of its weights>.pt``: computed once per data
    set, split, size and extractor, and never reused for other images or weights. A hit marks the file used;
    a write prunes the folder (module docstring)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"reference images must be uint8 as stored, got {images.dtype}")
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / f"{name}_{digest}_{extractor.name}_{extractor.sha256[:16]}.pt"
    if path.exists():
        mark_used(path)
        return safe_load(path, "evaluation.cache_dir")
    feats = extract_features(extractor, images, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks may fill the cache at the same time
    torch.save(feats, tmp)
    os.replace(tmp, path)
    prune(path.parent, ".pt", FEATURES_MAX_AGE_DAYS, FEATURES_MAX_BYTES, stem=_FEATURES_STEM, keep=(path,))
    return feats


def _gather_rows(x: Tensor, device: torch.device) -> Tensor:
    """Concatenate every rank's rows of ``x`` in rank order (ranks may hold different numbers of rows)."""
    world = torch.distributed.get_world_size()
    n = torch.tensor([len(x)], device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    rows = int(max(sizes))
    padded = torch.zeros((rows, *x.shape[1:]), dtype=x.dtype, device=device)
    padded[: len(x)] = x.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[: int(k)] for p, k in zip(parts, sizes)]).cpu()


def evaluate_images(
    sample: Callable[[int], Tensor],
    real_features: Tensor,
    extractor: FeatureExtractor,
    protocol: ImageProtocol,
    batch_size: int = 500,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """FID and KID of the first ``protocol.n_fid`` and IS of the first ``protocol.n_is`` samples drawn by
    ``sample(n)`` (model space, [-1, 1]) against ``real_features``. Batch k of ``batch_size`` samples is
    drawn after ``manual_seed(protocol.seed + k)``, so the sample set does not depend on who draws it.
    Returns ``({metric name: value}, {metric name: protocol record})``.

    Under DDP every rank calls this with its ``rank`` / ``world_size`` and generates and embeds a
    contiguous block of the batches; the features are gathered to rank 0 in batch order, which alone
    updates and computes the metrics (other ranks get ``({}, {})``). N ranks thus give exactly the
    values of one process. (Not torchmetrics' own sync: a rank holding no KID / IS samples has empty
    list states, which its gather cannot concatenate, and gathering by rank would reorder the samples
    that KID's subsets and IS's splits are drawn from.)"""
    d, device = extractor.num_features, _device(extractor)
    if not extractor.has_logits:
        protocol = replace(protocol, n_is=0)
    check_sample_counts(protocol.n_fid, protocol.n_is, len(real_features), d, protocol.extractor, protocol.is_splits)
    total = max(protocol.n_fid, protocol.n_is)
    n_batches = -(-total // batch_size)
    if n_batches < world_size:
        raise ValueError(f"evaluation: {n_batches} sample batches cannot be shared by {world_size} ranks; "
                         "lower evaluation.batch_size")
    feats, logits = [], []
    with torch.random.fork_rng(), torch.inference_mode():
        for k in range(rank * n_batches // world_size, (rank + 1) * n_batches // world_size):
            torch.manual_seed(protocol.seed + k)
            done = k * batch_size
            f, lg = extractor(to_uint8(sample(min(batch_size, total - done))).to(device))
            feats.append(f[: max(0, protocol.n_fid - done)].cpu())  # only what FID / KID and IS use
            logits.append(f.new_zeros(0, 0) if lg is None else lg[: max(0, protocol.n_is - done)].cpu())
    feats, logits = torch.cat(feats), torch.cat(logits)
    if world_size > 1:
        feats, logits = _gather_rows(feats, device), _gather_rows(logits, device)
        if rank != 0:
            return {}, {}
    fid = FrechetDistance(feature=_Given(d), sync_on_compute=False)
    kid_size = min(protocol.kid_subset_size, protocol.n_fid, len(real_features))
    kid = KernelInceptionDistance(feature=_Given(d), subsets=protocol.kid_subsets, subset_size=kid_size,
                                  sync_on_compute=False)
    isc = InceptionScore(feature=_Given(), splits=protocol.is_splits, sync_on_compute=False)
    for part in real_features.split(batch_size):
        fid.update(part, real=True)
        kid.update(part.float(), real=True)
    for part in feats[: protocol.n_fid].split(batch_size):
        fid.update(part.double(), real=False)
        kid.update(part.float(), real=False)
    for part in logits[: protocol.n_is].split(batch_size):
        isc.update(part.double())
    with torch.random.fork_rng():
        torch.manual_seed(protocol.seed)  # KID's subsets and IS's shuffle
        kid_mean, kid_std = kid.compute()
        is_mean, is_std = isc.compute() if protocol.n_is else (None, None)
    if protocol.n_is:
        splits = len(torch.arange(protocol.n_is).chunk(protocol.is_splits))  # torch.chunk may make fewer
        is_std = is_std * math.sqrt((splits - 1) / splits)  # torchmetrics' ddof-1 std -> the reference's ddof 0
    fid_value = fid.compute()
    record = asdict(protocol) | {"kid_subset_size": kid_size, "extractor_resize": extractor.resize,
                                 "extractor_input_range": extractor.input_range}
    ref = protocol.reference_split + ("" if protocol.reference_full else count_name(protocol.reference_size))
    n_fid, n_is, ext = count_name(protocol.n_fid), count_name(protocol.n_is), protocol.extractor
    values = {
        f"fid{n_fid}_{ref}_{ext}": float(fid_value),
        f"kid{n_fid}_{ref}_{ext}": float(kid_mean),
        f"kid{n_fid}_{ref}_{ext}_std": float(kid_std),
    }
    if protocol.n_is:
        values |= {f"is{n_is}_{ext}": float(is_mean), f"is{n_is}_{ext}_std": float(is_std)}
    return values, {name: record for name in values}


def evaluate(ctx: EvalContext) -> Measured:
    """The ``image`` family: FID / KID of ``n_fid`` and IS of ``n_is`` samples with ``extractor`` (default:
    ``features.default_extractor``: the MNIST classifier for grey digit sets, else Inception, or the offline
    ``inception-ts`` (FID / KID only, IS skipped with a warning) when torch-fidelity's weights are not on
    disk) against ``reference_split`` (all of it, or a seeded subset of ``n_reference``). Every DDP rank
    calls it; rank 0 gets the values."""
    st, dm = ctx.settings, ctx.datamodule
    name = st.extractor or default_extractor(dm.dataset)
    extractor = make_extractor(name, st.extractor_weights).to(ctx.device)
    if not extractor.has_logits and ctx.rank == 0:
        warnings.warn(f"evaluation: IS not computed: extractor {name} has no logits; IS needs torch-fidelity's "
                      f"Inception weights {INCEPTION_WEIGHTS_FILE} in {Path(torch.hub.get_dir()) / 'checkpoints'} "
                      "(or $REPRO_INCEPTION_WEIGHTS) and evaluation.extractor inception", stacklevel=2)
    images = reference_images(dm, st.reference_split)
    subset = reference_index(len(images), st.n_reference)
    full = subset is None
    if not full:
        images = images[subset]
    real = reference_features(images, extractor, f"{dm.dataset}_{st.reference_split}", st.batch_size, st.cache_dir)
    protocol = ImageProtocol(
        extractor=name, extractor_sha256=extractor.sha256, dataset=dm.dataset,
        reference_split=st.reference_split, reference_size=len(images), reference_full=full,
        n_fid=st.n_fid, n_is=st.n_is, image_size=int(images.shape[-1]), weights=ctx.weights, seed=st.seed,
    )
    return evaluate_images(ctx.sample, real, extractor, protocol, st.batch_size, ctx.rank, ctx.world_size)

"""End-of-training evaluation written to ``<log_dir>/metrics.json`` (atomically)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from repro.callbacks.rundir import run_dir
from repro.metrics.features import EXTRACTORS, INCEPTION_WEIGHTS_FILE, default_extractor, make_extractor
from repro.metrics.image import (
    PREPROCESSING,
    ImageProtocol,
    count_name,
    evaluate_images,
    reference_features,
    reference_images,
    to_uint8,
)
from repro.metrics.stacked import N_TRIPLES, digit_triples, stacked_mode_metrics
from repro.metrics.toy import mode_metrics

__all__ = ["FinalEvaluation", "write_json_atomic", "REFERENCE_SPLITS"]

REFERENCE_SPLITS = ("train", "test")


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON to a temp file, then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class FinalEvaluation(L.Callback):
    """After fit: evaluate the final (EMA if on) generator and write ``metrics.json``.

    2-D mixtures: mode metrics (``repro.metrics.toy``) on ``n_samples`` samples (PacGAN: 2,500).
    Image sets, when ``image_metrics`` is on (it costs ``max(n_fid, n_is)`` generated samples):
    FID / KID of ``n_fid`` and IS of ``n_is`` samples (``repro.metrics.image``) with feature
    ``extractor`` (default: ``classifier`` for MNIST and digits, else ``inception``, or ``inception-ts``
    (FID / KID only) when torch-fidelity's weights are not on disk; ``features.default_extractor``) against the
    ``reference_split`` (all of it, or a seeded subset of ``n_reference``); stacked MNIST: the digit
    triples of ``n_stacked`` samples (VEEGAN's 26,000; ``repro.metrics.stacked``). Every value gets its
    protocol in ``metrics.json["protocols"]``.
    """

    def __init__(
        self,
        n_samples: int = 2500,
        seed: int = 1234,
        image_metrics: bool = False,
        extractor: str | None = None,
        extractor_weights: str | None = None,
        n_fid: int = 10_000,
        n_is: int = 50_000,
        reference_split: str = "train",
        n_reference: int | None = None,
        n_stacked: int = 26_000,
        batch_size: int = 500,
        cache_dir: str | None = None,
    ):
        if reference_split not in REFERENCE_SPLITS:
            raise ValueError(f"evaluation.reference_split: {reference_split!r}; valid: {', '.join(REFERENCE_SPLITS)}")
        if extractor is not None and extractor not in EXTRACTORS:
            raise ValueError(f"evaluation.extractor: {extractor!r}; valid: {', '.join(EXTRACTORS)}")
        for key, n in (("n_fid", n_fid), ("n_is", n_is), ("n_stacked", n_stacked), ("batch_size", batch_size)):
            if n < 2:
                raise ValueError(f"evaluation.{key} must be >= 2, got {n}")
        self.n_samples, self.seed = n_samples, seed
        self.image_metrics, self.extractor, self.extractor_weights = image_metrics, extractor, extractor_weights
        self.n_fid, self.n_is, self.n_stacked, self.batch_size = n_fid, n_is, n_stacked, batch_size
        self.reference_split, self.n_reference = reference_split, n_reference
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.metrics: dict[str, Any] = {}
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def _image_metrics(self, dm: Any, module: L.LightningModule, weights: str, rank: int = 0,
                       world_size: int = 1) -> tuple[dict, dict]:
        sample = module.sample  # EMA weights when EMA is on, eval mode
        if dm.dataset == "stacked-mnist":
            extractor = make_extractor("classifier", self.extractor_weights).to(module.device)
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                triples = torch.cat([
                    digit_triples(to_uint8(sample(min(self.batch_size, self.n_stacked - i))), extractor).cpu()
                    for i in range(0, self.n_stacked, self.batch_size)
                ])
            name = count_name(self.n_stacked)
            protocol = {"extractor": "classifier", "extractor_sha256": extractor.sha256, "n_generated": self.n_stacked,
                        "preprocessing": PREPROCESSING + ", each channel classified", "weights": weights,
                        "seed": self.seed, "modes_of": N_TRIPLES}
            values = {f"{k}{name}_classifier": v for k, v in stacked_mode_metrics(triples).items()}
            return values, {k: protocol for k in values}
        name = self.extractor or default_extractor(dm.dataset)
        extractor = make_extractor(name, self.extractor_weights).to(module.device)
        if not extractor.has_logits:
            rank_zero_warn(f"evaluation: IS not computed: extractor {name} has no logits; IS needs torch-fidelity's "
                           f"Inception weights {INCEPTION_WEIGHTS_FILE} in {Path(torch.hub.get_dir()) / 'checkpoints'} "
                           "(or $REPRO_INCEPTION_WEIGHTS) and evaluation.extractor inception")
        images = reference_images(dm, self.reference_split)
        full = self.n_reference is None or self.n_reference >= len(images)
        if not full:
            images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: self.n_reference]]
        real = reference_features(images, extractor, f"{dm.dataset}_{self.reference_split}", self.batch_size, self.cache_dir)
        protocol = ImageProtocol(
            extractor=name, extractor_sha256=extractor.sha256, dataset=dm.dataset,
            reference_split=self.reference_split, reference_size=len(images), reference_full=full,
            n_fid=self.n_fid, n_is=self.n_is, image_size=int(images.shape[-1]), weights=weights, seed=self.seed,
        )
        return evaluate_images(sample, real, extractor, protocol, self.batch_size, rank, world_size)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        dm = trainer.datamodule
        weights = "ema" if getattr(module, "generator_ema", None) is not None else "final"
        shared = self.image_metrics and not getattr(dm, "is_toy", False) and dm.dataset != "stacked-mnist"
        if trainer.global_rank != 0:  # under DDP the other ranks only draw their share of FID / KID / IS samples
            if shared:
                self._image_metrics(dm, module, weights, trainer.global_rank, trainer.world_size)
            return
        record: dict[str, Any] = {
            "status": "finished",
            "generator_steps": trainer.global_step,
            "train_seconds": time.perf_counter() - self._t0,
            "weights": weights,
        }
        if getattr(dm, "mixture", None) is not None:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                fake = module.sample(self.n_samples).float().cpu()
            record["metrics"] = {
                f"{k}_{self.n_samples}": v for k, v in mode_metrics(fake, dm.mixture).items()
            }
            protocol = {"n_generated": self.n_samples, "weights": weights, "seed": self.seed, "n_std": 3.0,
                        "definition": "VEEGAN Sec. 5.1 / PacGAN Table 1"}
            record["protocols"] = {k: protocol for k in record["metrics"]}
        elif self.image_metrics and not getattr(dm, "is_toy", False):
            values, protocols = self._image_metrics(dm, module, weights, 0, trainer.world_size)
            record["metrics"], record["protocols"] = values, protocols
        for logger in trainer.loggers if record.get("metrics") else []:  # toy modes or image metrics, once
            logger.log_metrics({f"eval/{k}": v for k, v in record["metrics"].items()}, step=trainer.global_step)
        self.metrics = record
        write_json_atomic(record, run_dir(trainer) / "metrics.json")

"""End-of-training evaluation written to ``<log_dir>/metrics.json`` (atomically), and the same metrics at
points through training (metric curves)."""
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

    Curves: with ``curve_points`` = P > 1 the same metrics, with the same protocol, are also evaluated after
    ``round(i * max_steps / P)`` generator updates for i = 1 .. P-1 (under ``inference_mode``, the training RNG
    untouched) and written with the final value to ``metrics.json["curves"]``: ``{metric: [[step, value], ...]}``,
    plus the cumulative training seconds at each point (``curve_seconds``). They cost P-1 extra evaluations.
    The points done and the training time so far are kept in checkpoints, so a resumed run's curve and
    ``train_seconds`` are those of one uninterrupted run.
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
        curve_points: int = 0,
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
        if curve_points < 0:
            raise ValueError(f"evaluation.curve_points must be >= 0, got {curve_points}")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.curve_points = curve_points
        self.metrics: dict[str, Any] = {}
        self.curve: list[dict[str, Any]] = []  # one entry per point: step, train_seconds, metric values
        self._t0, self._seconds_before = 0.0, 0.0
        self._curve_steps: set[int] = set()

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "train_seconds": self.train_seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self._seconds_before = list(state["curve"]), float(state["train_seconds"])

    def train_seconds(self) -> float:
        """Training wall time so far, summed over resumed segments."""
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        total = trainer.max_steps
        if self.curve_points > 1 and total and total > 0:
            self._curve_steps = {round(i * total / self.curve_points) for i in range(1, self.curve_points)} - {0}

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step not in self._curve_steps or any(point["step"] == step for point in self.curve):
            return
        seconds = self.train_seconds()
        with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
            values = self.evaluate(trainer, module)
        self._t0 += self.train_seconds() - seconds  # evaluation time is not training time
        if values is not None:
            self.curve.append({"step": step, "train_seconds": seconds, "metrics": values[0]})

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

    def evaluate(self, trainer: L.Trainer, module: L.LightningModule) -> tuple[dict, dict] | None:
        """The configured metrics of the current (EMA if on) generator: ``(values, protocols)`` on rank 0,
        ``None`` on other ranks (which draw their share of image-metric samples) and when nothing applies."""
        dm = trainer.datamodule
        weights = "ema" if getattr(module, "generator_ema", None) is not None else "final"
        shared = self.image_metrics and not getattr(dm, "is_toy", False) and dm.dataset != "stacked-mnist"
        if trainer.global_rank != 0:
            if shared:
                self._image_metrics(dm, module, weights, trainer.global_rank, trainer.world_size)
            return None
        if getattr(dm, "mixture", None) is not None:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                fake = module.sample(self.n_samples).float().cpu()
            values = {f"{k}_{self.n_samples}": v for k, v in mode_metrics(fake, dm.mixture).items()}
            protocol = {"n_generated": self.n_samples, "weights": weights, "seed": self.seed, "n_std": 3.0,
                        "definition": "VEEGAN Sec. 5.1 / PacGAN Table 1"}
            return values, {k: protocol for k in values}
        if self.image_metrics and not getattr(dm, "is_toy", False):
            return self._image_metrics(dm, module, weights, 0, trainer.world_size)
        return None

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seconds = self.train_seconds()
        evaluated = self.evaluate(trainer, module)
        if trainer.global_rank != 0:
            return
        record: dict[str, Any] = {
            "status": "finished",
            "generator_steps": trainer.global_step,
            "train_seconds": seconds,
            "weights": "ema" if getattr(module, "generator_ema", None) is not None else "final",
        }
        if evaluated is not None:
            record["metrics"], record["protocols"] = evaluated
            for logger in trainer.loggers:  # toy modes or image metrics, once
                logger.log_metrics({f"eval/{k}": v for k, v in evaluated[0].items()}, step=trainer.global_step)
            if self.curve:
                points = [*self.curve, {"step": trainer.global_step, "train_seconds": seconds, "metrics": evaluated[0]}]
                record["curves"] = {k: [[p["step"], p["metrics"].get(k)] for p in points] for k in evaluated[0]}
                record["curve_seconds"] = [[p["step"], round(p["train_seconds"], 2)] for p in points]
        self.metrics = record
        write_json_atomic(record, run_dir(trainer) / "metrics.json")

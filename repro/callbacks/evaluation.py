"""End-of-training evaluation written to ``<log_dir>/metrics.json`` (atomically)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from repro.metrics.toy import mode_metrics

__all__ = ["FinalEvaluation", "write_json_atomic"]


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON to a temp file, then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class FinalEvaluation(L.Callback):
    """After fit: evaluate the final (EMA if on) generator and write ``metrics.json``.

    2-D mixtures: mode metrics (``repro.metrics.toy``) on ``n_samples`` samples (PacGAN: 2,500).
    """

    def __init__(self, n_samples: int = 2500, seed: int = 1234):
        self.n_samples, self.seed = n_samples, seed
        self.metrics: dict[str, Any] = {}
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        dm = trainer.datamodule
        record: dict[str, Any] = {
            "status": "finished",
            "generator_steps": trainer.global_step,
            "train_seconds": time.perf_counter() - self._t0,
            "weights": "ema" if getattr(module, "generator_ema", None) is not None else "final",
        }
        if getattr(dm, "mixture", None) is not None:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                fake = module.sample(self.n_samples).float().cpu()
            record["metrics"] = {
                f"{k}_{self.n_samples}": v for k, v in mode_metrics(fake, dm.mixture).items()
            }
        self.metrics = record
        write_json_atomic(record, Path(trainer.log_dir or trainer.default_root_dir) / "metrics.json")

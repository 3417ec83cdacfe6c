"""GAN with representative features (Bang & Shim 2018): D's classifier sees [h2 = D.features(x), h1 = E(x)],
with E the encoder of an autoencoder pre-trained on the real data and then frozen.

Pre-training is the variant's preparation hook (``prepare``): ``repro prepare`` (same arguments as
``repro fit``) runs it, and ``repro fit`` runs it first when the cached weights are missing. The weights
are cached under ``ae_cache_dir`` at a name derived from the data set and the autoencoder's
configuration (``RFGAN.ae_cache_path``); a module set up without them refuses to train.
"""
from __future__ import annotations

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
from repro.normalization import wrap
from repro.variants.base import GANModule

__all__ = ["RFGAN", "RepresentativeDiscriminator", "MissingPretrainedWeights", "pretrain_autoencoder"]


class MissingPretrainedWeights(FileNotFoundError):
    """The cached autoencoder weights RFGAN needs do not exist yet."""


class RepresentativeDiscriminator(nn.Module):
    """Bang & Shim 2018, Fig. 2: y = Y([h2, h1]), h2 = D.features(x), h1 = E(x) (E frozen, no gradient).

    D's own output layer is replaced by the new classifier ``head`` over both feature sets. E is held
    outside the module tree, so it is neither a D parameter (D's optimizer never sees it) nor touched
    by ``requires_grad_`` toggles on D.
    """

    def __init__(self, discriminator: nn.Module, encoder: nn.Module, code_dim: int, norm: str = "none"):
        super().__init__()
        for attr in ("features", "feature_dim", "head"):
            if not hasattr(discriminator, attr):
                raise ValueError(f"model.discriminator must expose `{attr}` for RFGAN (features / feature_dim / head)")
        discriminator.head = None  # its classifier is replaced by ``self.head`` below
        self.body = discriminator
        self._encoder = (encoder,)
        self.feature_dim = discriminator.feature_dim + code_dim
        self.head = wrap(nn.Linear(self.feature_dim, 1), norm)

    def features(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            h1 = self._encoder[0](x)
        return torch.cat([self.body.features(x), h1], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


def pretrain_autoencoder(ae: nn.Module, data: Tensor, steps: int, lr: float, batch_size: int, seed: int = 0) -> float:
    """Train ``ae`` on the L2 reconstruction loss (Bang & Shim 2018, Sec. 3) with Adam; returns the last loss."""
    return pretrain(ae, lambda x: (ae(x) - x).flatten(1).square().sum(1).mean(),  # ||x - D(E(x))||^2 per sample
                    torch.optim.Adam(ae.parameters(), lr=lr), data, steps, batch_size, seed)


class RFGAN(GANModule, name="rfgan"):
    """Representative-feature GAN over any objective (Bang & Shim 2018, Sec. 3 and Fig. 2).

    Args:
        autoencoder: ``repro.nets.autoencoder.MLPAutoencoder`` / ``ConvAutoencoder``; its encoder gives h1.
        loss: objective name, as for ``GANModule`` (the paper: the DCGAN loss).
        head_norm: normalization of the new classifier head (``repro.normalization.NORMS``).
        ae_steps, ae_lr, ae_batch_size: autoencoder pre-training (``prepare``, ``repro prepare``).
        ae_cache_dir: folder of the cached autoencoder weights.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        autoencoder: nn.Module,
        loss: str = "nonsaturating",
        head_norm: str = "none",
        ae_steps: int = 2000,
        ae_lr: float = 1e-3,
        ae_batch_size: int = 64,
        ae_cache_dir: str = "runs/ae_cache",
        **kwargs: Any,
    ):
        for attr in ("encoder", "code_dim", "config"):
            if not hasattr(autoencoder, attr):
                raise ValueError(
                    f"model.autoencoder must expose `{attr}` (use repro.nets.autoencoder.MLPAutoencoder / ConvAutoencoder)"
                )
        if ae_steps < 1 or ae_batch_size < 1 or not ae_lr > 0:
            raise ValueError(
                f"model.ae_steps and model.ae_batch_size must be >= 1 and model.ae_lr > 0, "
                f"got {ae_steps}, {ae_batch_size}, {ae_lr}"
            )
        autoencoder.requires_grad_(False).eval()
        rep = RepresentativeDiscriminator(discriminator, autoencoder.encoder, autoencoder.code_dim, head_norm)
        super().__init__(generator, rep, loss=loss, **kwargs)
        self.autoencoder = autoencoder
        self.ae_steps, self.ae_lr, self.ae_batch_size, self.ae_cache_dir = ae_steps, ae_lr, ae_batch_size, ae_cache_dir

    @property
    def encoder(self) -> nn.Module:
        return self.autoencoder.encoder

    def ae_cache_path(self, dm: GANDataModule) -> Path:
        """``<ae_cache_dir>/<dataset>-<hash>.pt``; the hash covers the data (set, size, subset, toy seed),
        the autoencoder's config and its pre-training settings."""
        key = {
            "dataset": dm.dataset, "image_size": dm.image_size, "num_samples": dm.num_samples,
            "toy_seed": dm.seed if dm.is_toy else None, "autoencoder": self.autoencoder.config,
            "steps": self.ae_steps, "lr": self.ae_lr, "batch_size": self.ae_batch_size,
        }
        if dm.geometry is not None:  # dataset: mixture
            key["mixture"] = dataclasses.asdict(dm.geometry)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return Path(self.ae_cache_dir) / f"{dm.dataset}-{digest}.pt"

    def prepare(self, datamodule: GANDataModule) -> str:
        """Pre-train the autoencoder on the data module's data and cache its weights; returns the file."""
        datamodule.setup()
        path = self.ae_cache_path(datamodule)
        final = pretrain_autoencoder(self.autoencoder, datamodule.data, self.ae_steps, self.ae_lr, self.ae_batch_size,
                                     datamodule.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel runs of one table row may prepare at once
        torch.save({"state_dict": self.autoencoder.state_dict(), "final_loss": final}, tmp)
        os.replace(tmp, path)
        return str(path)

    def preparation_missing(self, datamodule: GANDataModule) -> str | None:
        path = self.ae_cache_path(datamodule)
        return None if path.exists() else f"no pre-trained autoencoder for this data and model.autoencoder at {path}"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule
        missing = self.preparation_missing(dm)
        if missing:
            raise MissingPretrainedWeights(
                f"RFGAN: {missing}; create it with `repro prepare` followed by the arguments of `repro fit` "
                "(which does this itself when the file is missing)"
            )
        path = self.ae_cache_path(dm)
        self.autoencoder.load_state_dict(safe_load(path, "model.ae_cache_dir")["state_dict"])

    def train(self, mode: bool = True) -> "RFGAN":
        super().train(mode)
        self.autoencoder.eval()  # frozen: E is always in inference mode
        return self

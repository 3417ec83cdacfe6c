"""Least Squares GAN (Mao et al. 2017)."""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.variants.base import GANModule

__all__ = ["LSGAN"]


class LSGAN(GANModule, name="lsgan"):
    """Least-squares D and G losses with labels a (fake), b (real), c (G's target); Mao et al. 2017, eq. 2.

    Defaults a=0, b=1, c=1 are the paper's eq. 9; a=-1, b=1, c=0 is its eq. 8.
    """

    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, a: float = 0.0, b: float = 1.0, c: float = 1.0, **kwargs: Any
    ):
        super().__init__(generator, discriminator, loss="least_squares", loss_args={"a": a, "b": b, "c": c}, **kwargs)

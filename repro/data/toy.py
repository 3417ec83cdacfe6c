"""2-D benchmark distributions, each named after the paper whose geometry it copies.

Results only compare within one geometry: PacGAN's ``ring8`` (radius 1, std 0.01) is not WGAN-GP's
``wgangp-8gaussians`` (radius 2, std 0.02, then scaled by 1/1.414).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ToyMixture", "TOY_SETS", "make_toy"]


@dataclass(frozen=True)
class ToyMixture:
    """An isotropic Gaussian mixture with equal weights: what the toy metrics need to know."""

    centers: Tensor  # (K, 2)
    std: float

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` points: a uniformly chosen centre plus N(0, std^2 I) noise."""
        idx = torch.randint(len(self.centers), (n,), generator=generator)
        return self.centers[idx] + self.std * torch.randn(n, 2, generator=generator)


def _ring(k: int, radius: float) -> Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return (radius * torch.stack([angles.cos(), angles.sin()], 1)).float()


def _grid(values: tuple[float, ...]) -> Tensor:
    v = torch.tensor(values)
    return torch.cartesian_prod(v, v)


# PacGAN / VEEGAN (Srivastava et al. 2017, Sec. 5.1): 8 modes on a circle of radius 1, std 0.01.
def ring8() -> ToyMixture:
    return ToyMixture(_ring(8, 1.0), 0.01)


# PacGAN / VEEGAN: 25 modes at {-4,-2,0,2,4}^2, std 0.05.
def grid25() -> ToyMixture:
    return ToyMixture(_grid((-4.0, -2.0, 0.0, 2.0, 4.0)), 0.05)


# WGAN-GP gan_toy.py ("8gaussians"): radius 2, std 0.02, whole set divided by 1.414.
def wgangp_8gaussians() -> ToyMixture:
    return ToyMixture(_ring(8, 2.0) / 1.414, 0.02 / 1.414)


# WGAN-GP gan_toy.py ("25gaussians"): grid spacing 2, std 0.05, whole set divided by 2.828.
def wgangp_25gaussians() -> ToyMixture:
    return ToyMixture(_grid((-4.0, -2.0, 0.0, 2.0, 4.0)) / 2.828, 0.05 / 2.828)


def swissroll(n: int, seed: int) -> Tensor:
    """WGAN-GP gan_toy.py: sklearn's make_swiss_roll(noise=0.25), dims [0, 2], divided by 7.5."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n_samples=n, noise=0.25, random_state=seed)
    return torch.from_numpy(points[:, [0, 2]] / 7.5).float()


TOY_SETS = {
    "ring8": ring8,
    "grid25": grid25,
    "wgangp-8gaussians": wgangp_8gaussians,
    "wgangp-25gaussians": wgangp_25gaussians,
}


def make_toy(name: str, n: int, seed: int) -> tuple[Tensor, ToyMixture | None]:
    """``n`` points of the named 2-D set and its mixture (None for the swiss roll, which has no modes)."""
    if name == "swissroll":
        return swissroll(n, seed), None
    mixture = TOY_SETS[name]()
    return mixture.sample(n, torch.Generator().manual_seed(seed)), mixture

"""2-D benchmark distributions, each named after the paper whose geometry it copies.

Results only compare within one geometry: PacGAN's ``ring8`` (radius 1, std 0.01) is not WGAN-GP's
``wgangp-8gaussians`` (radius 2, std 0.02, then scaled by 1/1.414).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ToyMixture", "Geometry", "TOY_SETS", "make_toy"]


@dataclass(frozen=True)
class ToyMixture:
    """An isotropic Gaussian mixture with equal weights: what the toy metrics need to know."""

    centers: Tensor  # (K, 2)
    std: float

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` points: a uniformly chosen centre plus N(0, std^2 I) noise."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``sample``'s ``n`` points (the same draws) and the index of the component each came from."""
        idx = torch.randint(len(self.centers), (n,), generator=generator)
        return self.centers[idx] + self.std * torch.randn(n, 2, generator=generator), idx


def _ring(k: int, radius: float) -> Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return (radius * torch.stack([angles.cos(), angles.sin()], 1)).float()


def _grid(side: int, spacing: float) -> Tensor:
    v = ((torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing).float()
    return torch.cartesian_prod(v, v)


@dataclass(frozen=True)
class Geometry:
    """Where a 2-D mixture's modes lie (``data.mixture`` in a config, with ``data.dataset: mixture``).

    layout: "ring" (``modes`` centres evenly on a circle of ``radius``, the first at angle 0) or "grid"
        (``modes`` = k^2 centres on a square grid centred at 0, neighbours ``spacing`` apart, or give
        ``extent`` instead: the outermost centres at +-extent).
    std: each mode's standard deviation.
    divisor: centres and std are divided by it at the end (WGAN-GP's toy sets: 1.414, 2.828).
    """

    layout: Literal["ring", "grid"] = "ring"
    modes: int = 8
    std: float = 0.01
    radius: float | None = None
    spacing: float | None = None
    extent: float | None = None
    divisor: float = 1.0

    def __post_init__(self) -> None:
        if self.layout not in ("ring", "grid"):
            raise ValueError(f"data.mixture.layout must be ring or grid, got {self.layout!r}")
        if self.modes < 1 or not self.std > 0 or not self.divisor > 0:
            raise ValueError(
                f"data.mixture needs modes >= 1, std > 0 and divisor > 0, got {self.modes}, {self.std}, {self.divisor}"
            )
        sizes = [v for v in (self.radius, self.spacing, self.extent) if v is not None]
        if self.layout == "ring" and (self.radius is None or len(sizes) != 1):
            raise ValueError("data.mixture: a ring takes radius (and neither spacing nor extent)")
        if self.layout == "grid":
            side = math.isqrt(self.modes)
            if side * side != self.modes or side < 2:
                raise ValueError(f"data.mixture: a grid needs modes = k^2 with k >= 2 (4, 9, 25, ...), got {self.modes}")
            if self.radius is not None or len(sizes) != 1:
                raise ValueError("data.mixture: a grid takes exactly one of spacing and extent (and no radius)")
        if not sizes[0] > 0:
            raise ValueError(f"data.mixture: the {self.layout}'s size must be > 0, got {sizes[0]}")

    def mixture(self) -> ToyMixture:
        if self.layout == "ring":
            centers = _ring(self.modes, self.radius)
        else:
            side = math.isqrt(self.modes)
            centers = _grid(side, self.spacing if self.spacing is not None else 2 * self.extent / (side - 1))
        return ToyMixture(centers / self.divisor, self.std / self.divisor)


def swissroll(n: int, seed: int) -> Tensor:
    """WGAN-GP gan_toy.py: sklearn's make_swiss_roll(noise=0.25), dims [0, 2], divided by 7.5."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n_samples=n, noise=0.25, random_state=seed)
    return torch.from_numpy(points[:, [0, 2]] / 7.5).float()


# The named sets, each a Geometry preset:
TOY_SETS: dict[str, Geometry] = {
    # PacGAN / VEEGAN (Srivastava et al. 2017, Sec. 5.1): 8 modes on a circle of radius 1, std 0.01.
    "ring8": Geometry("ring", 8, 0.01, radius=1.0),
    # PacGAN / VEEGAN: 25 modes at {-4,-2,0,2,4}^2, std 0.05.
    "grid25": Geometry("grid", 25, 0.05, spacing=2.0),
    # WGAN-GP gan_toy.py ("8gaussians"): radius 2, std 0.02, whole set divided by 1.414.
    "wgangp-8gaussians": Geometry("ring", 8, 0.02, radius=2.0, divisor=1.414),
    # WGAN-GP gan_toy.py ("25gaussians"): grid spacing 2, std 0.05, whole set divided by 2.828.
    "wgangp-25gaussians": Geometry("grid", 25, 0.05, spacing=2.0, divisor=2.828),
}


def make_toy(name: str, n: int, seed: int, geometry: Geometry | None = None
             ) -> tuple[Tensor, Tensor | None, ToyMixture | None]:
    """``n`` points of the named 2-D set (``mixture``: of ``geometry``), the mixture component of each
    (its class label) and the mixture (both None for the swiss roll, which has no modes)."""
    if name == "swissroll":
        return swissroll(n, seed), None, None
    if name == "mixture":
        if geometry is None:
            raise ValueError("data.dataset: mixture needs data.mixture (layout, modes, std, radius or spacing)")
        mixture = geometry.mixture()
    else:
        mixture = TOY_SETS[name].mixture()
    points, components = mixture.sample_labelled(n, torch.Generator().manual_seed(seed))
    return points, components, mixture

"""Feature matching (Salimans et al. 2016, Sec. 3.1): G's objective is replaced by

    || E_{x ~ p_data} f(x) - E_{z ~ p_z} f(G(z)) ||_2^2,

f an intermediate layer of D (D keeps its own loss, ``loss``). The layer and the distance are options:

- ``layer``: ``null`` (default) is D's last hidden layer, ``D.features(x)`` - the layer both released scripts
  match (MNIST: the last 250-unit dense layer; CIFAR-10: the global-pooled layer before the classifier); a
  name of a D submodule (``body.3``, as in ``discriminator.named_modules()``) matches that layer's output.
- ``distance``: ``l2_squared`` (default, the paper's text: the squared L2 norm of the mean difference),
  ``mean_squared`` (the MNIST code, ``T.mean(T.square(m1 - m2))``) or ``mean_absolute`` (the CIFAR-10 code,
  ``T.mean(abs(m1 - m2))``), i.e. the first two differ by the feature count only.

The real batch is the iteration's last real batch (the loop's G-step hook; the released code draws a
separate one, ``trainx_unl2``); its features are constants for G. ``g_regularizers`` still add to G's loss.
"""
from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from repro.variants.base import GANModule

__all__ = ["FeatureMatchingGAN", "feature_distance"]

Distance = Literal["l2_squared", "mean_squared", "mean_absolute"]
DISTANCES: tuple[str, ...] = ("l2_squared", "mean_squared", "mean_absolute")


def feature_distance(real: Tensor, fake: Tensor, distance: Distance) -> Tensor:
    """The distance between the batch means of two (n, k) feature matrices."""
    diff = real.mean(dim=0) - fake.mean(dim=0)
    if distance == "l2_squared":
        return diff.square().sum()
    if distance == "mean_squared":
        return diff.square().mean()
    if distance == "mean_absolute":
        return diff.abs().mean()
    raise ValueError(f"unknown feature-matching distance {distance!r}; valid: {', '.join(DISTANCES)}")


class FeatureMatchingGAN(GANModule, name="feature_matching"):
    """D trained on ``loss`` (default non-saturating); G on feature matching (Salimans et al. 2016, Sec. 3.1).

    Args:
        layer: D submodule whose output is matched (``None``: ``D.features``, the last hidden layer).
        distance: ``l2_squared`` (paper), ``mean_squared`` (MNIST code) or ``mean_absolute`` (CIFAR-10 code).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, layer: str | None = None,
                 distance: Distance = "l2_squared", **kwargs: Any):
        if distance not in DISTANCES:
            raise ValueError(f"model.distance {distance!r} is not one of {', '.join(DISTANCES)}")
        if layer is None and not hasattr(discriminator, "features"):
            raise ValueError("feature matching on D's last hidden layer needs a discriminator exposing `features`")
        if layer is not None:
            names = dict(discriminator.named_modules())
            if layer not in names or layer == "":
                raise ValueError(f"model.layer {layer!r} is not a submodule of the discriminator; e.g. one of "
                                 f"{', '.join(n for n in list(names)[1:8])}")
        super().__init__(generator, discriminator, **kwargs)
        self.layer, self.distance = layer, distance

    def matched_features(self, x: Tensor) -> Tensor:
        """f(x), flattened per sample: ``D.features(x)`` or the output of the submodule ``layer``."""
        if self.layer is None:
            return self.discriminator.features(x).flatten(1)
        captured: list[Tensor] = []
        hook = self.discriminator.get_submodule(self.layer).register_forward_hook(
            lambda _m, _i, out: captured.append(out))
        try:
            self.discriminator(x)
        finally:
            hook.remove()
        return captured[-1].flatten(1)

    def generator_loss(self, real: Tensor, z: Tensor, fake: Tensor) -> Tensor:
        """|| mean f(real) - mean f(G(z)) || (the chosen distance) plus G's regularizers, D frozen."""
        with self.frozen_discriminator():
            loss = feature_distance(self.matched_features(self.real_input(real)).detach(),
                                    self.matched_features(fake), self.distance)
            return self.add_regularizers(loss, "g", z, fake)

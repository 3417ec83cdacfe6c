"""Jacobian clamping (Odena et al. 2018, Alg. 1) added to any variant's generator loss.

Two equivalent ways:

- in a config, append the regularizer to ``g_regularizers`` of any variant (no code)::

      model:
        class_path: repro.variants.WGANGP
        init_args:
          g_regularizers:
            - class_path: repro.regularizers.JacobianClamping
              init_args: {lambda_min: 1.0, lambda_max: 20.0, eps: 1.0}

- in Python, ``JacobianClamped(WGANGP)`` is a WGANGP subclass taking ``lambda_min``, ``lambda_max``,
  ``clamp_eps`` and ``clamp_weight`` that appends ``JacobianClamping`` to its ``g_regularizers``.
  ``JCGAN = JacobianClamped(NSGAN)`` is the registered ``jcgan`` variant.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from repro.regularizers import JacobianClamping
from repro.variants.base import GANModule
from repro.variants.vanilla import NSGAN

__all__ = ["JacobianClamped", "JCGAN"]


def JacobianClamped(variant: type[GANModule], name: str | None = None) -> type[GANModule]:  # noqa: N802 (factory)
    """``variant`` with ``JacobianClamping`` added to G's loss (Odena et al. 2018, Alg. 1; paper defaults);
    ``name`` registers the new class as a variant."""

    class Clamped(variant, name=name):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            generator: nn.Module,
            discriminator: nn.Module,
            lambda_min: float = 1.0,
            lambda_max: float = 20.0,
            clamp_eps: float = 1.0,
            clamp_weight: float = 1.0,
            **kwargs: Any,
        ):
            super().__init__(generator, discriminator, **kwargs)
            self.g_regularizers.append(JacobianClamping(lambda_min, lambda_max, clamp_eps, clamp_weight))

    Clamped.__name__ = Clamped.__qualname__ = f"JacobianClamped{variant.__name__}"
    Clamped.__doc__ = (
        f"{variant.__name__} with Jacobian clamping on G (Odena et al. 2018, Alg. 1).\n\n{variant.__doc__ or ''}"
    )
    return Clamped


JCGAN = JacobianClamped(NSGAN, name="jcgan")
JCGAN.__name__ = JCGAN.__qualname__ = "JCGAN"

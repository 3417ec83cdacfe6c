"""GAN variants: one small module each over ``GANModule``, and a name registry.

Every module of this package is imported here, so a new variant is one file: a class declared as
``class X(GANModule, name="x")`` is registered in ``VARIANTS`` and exported as ``repro.variants.X``.
"""
import importlib
import pkgutil

from repro.variants.base import GANModule
from repro.variants.jacobian import JacobianClamped

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

VARIANTS: dict[str, type[GANModule]] = dict(sorted(GANModule.registry.items()))
globals().update({cls.__name__: cls for cls in VARIANTS.values()})

__all__ = ["GANModule", "VARIANTS", "JacobianClamped", *(cls.__name__ for cls in VARIANTS.values())]

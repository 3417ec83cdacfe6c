"""GAN variants: one small module each over ``GANModule``, and a name registry."""
from repro.variants.base import GANModule
from repro.variants.lsgan import LSGAN
from repro.variants.vanilla import NSGAN, VanillaGAN
from repro.variants.wgan import WGAN, WGANGP

VARIANTS: dict[str, type[GANModule]] = {
    "vanilla": VanillaGAN,
    "nsgan": NSGAN,
    "lsgan": LSGAN,
    "wgan": WGAN,
    "wgangp": WGANGP,
}

__all__ = ["GANModule", "VARIANTS", *(cls.__name__ for cls in VARIANTS.values())]

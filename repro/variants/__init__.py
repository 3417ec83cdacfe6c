"""GAN variants: one small module each over ``GANModule``, and a name registry."""
from repro.variants.base import GANModule
from repro.variants.gngan import GNGAN
from repro.variants.jacobian import JCGAN, JacobianClamped
from repro.variants.lsgan import LSGAN
from repro.variants.rfgan import RFGAN
from repro.variants.sngan import SNGAN
from repro.variants.tan import TAN
from repro.variants.vanilla import NSGAN, VanillaGAN
from repro.variants.wgan import WGAN, WGANGP
from repro.variants.wgants import WGANTS
from repro.variants.xicfg import XICFG

VARIANTS: dict[str, type[GANModule]] = {
    "vanilla": VanillaGAN,
    "nsgan": NSGAN,
    "lsgan": LSGAN,
    "wgan": WGAN,
    "wgangp": WGANGP,
    "sngan": SNGAN,
    "gngan": GNGAN,
    "tan": TAN,
    "rfgan": RFGAN,
    "jcgan": JCGAN,
    "xicfg": XICFG,
    "wgants": WGANTS,
}

__all__ = ["GANModule", "VARIANTS", "JacobianClamped", *(cls.__name__ for cls in VARIANTS.values())]

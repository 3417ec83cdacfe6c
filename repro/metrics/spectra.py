"""Singular-value spectra of discriminator layers (Miyato et al. 2018, Sec. 2.1 and Fig. 3).

A convolution kernel W of shape (out, in, kh, kw) is treated as the matrix (out, in*kh*kw), as in the
SN-GAN paper. The spectrum is exact (``torch.linalg.svdvals`` in float64) of the weight the layer
uses in its forward pass (after spectral / weight normalization, read without running a power
iteration). The paper's Fig. 3 plots squared singular values scaled so the largest is 1.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from repro.normalization import weight_layers

__all__ = ["layer_matrix", "layer_spectra", "normalized_spectrum"]


def layer_matrix(layer: nn.Module) -> Tensor:
    """The layer's effective weight as a 2-D matrix (out, in*kh*kw), read in eval mode so a spectral
    norm parametrization reports its current W / sigma without updating u, v."""
    modes = [(m, m.training) for m in layer.modules()]
    layer.eval()
    try:
        with torch.no_grad():
            w = layer.weight.detach()
    finally:
        for m, mode in modes:
            m.training = mode
    return w.flatten(1)


def layer_spectra(module: nn.Module) -> dict[str, Tensor]:
    """``{layer name: singular values (float64, descending)}`` for every linear / conv layer of ``module``."""
    names = {id(m): name for name, m in module.named_modules()}
    return {
        names[id(layer)]: torch.linalg.svdvals(layer_matrix(layer).double().cpu())
        for layer in weight_layers(module)
    }


def normalized_spectrum(singular_values: Tensor, squared: bool = True) -> Tensor:
    """Singular values divided by the largest, squared by default (Miyato et al. 2018, Fig. 3)."""
    s = singular_values / singular_values.max()
    return s.square() if squared else s

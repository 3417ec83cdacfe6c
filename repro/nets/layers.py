"""What a paper's setup chooses per network: the hidden activation and the weight initialization.

Each net takes ``activation`` (with ``slope`` for LeakyReLU) and ``init`` (an ``Init``); the defaults
are each net's historical choice and PyTorch's own initialization, so existing configs build the
same networks bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["ACTIVATIONS", "make_activation", "Init", "initialize"]

ACTIVATIONS = ("relu", "leaky_relu", "elu", "tanh")


def make_activation(name: str, slope: float = 0.2) -> nn.Module:
    """The hidden activation called ``name``; ``slope`` is LeakyReLU's negative slope (ELU has alpha 1)."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "elu":
        return nn.ELU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class Init:
    """Weight initialization of a net's linear and (transposed) convolution layers.

    scheme: "default" (PyTorch's, untouched), "orthogonal" (Saxe et al. 2014; ``gain``),
        "xavier_uniform" / "xavier_normal" (Glorot & Bengio 2010, eq. 16; ``gain``), "normal" (N(0, std^2)).
    zero_bias: set every bias of those layers to 0.
    conv_truncation: with "normal", the (non-transposed) convolutions' weights come from N(0, std^2) truncated at
        +-conv_truncation * std (out-of-range draws redrawn: TF's ``truncated_normal_initializer``, which
        DCGAN-tensorflow's ``conv2d`` uses at 2 std while its ``deconv2d`` and ``linear`` draw the plain normal).
    A parametrized weight (spectral or weight norm) is initialized in its raw tensor.
    """

    scheme: Literal["default", "orthogonal", "xavier_uniform", "xavier_normal", "normal"] = "default"
    gain: float = 1.0
    std: float = 0.02
    zero_bias: bool = False
    conv_truncation: float | None = None

    def __post_init__(self) -> None:
        schemes = ("default", "orthogonal", "xavier_uniform", "xavier_normal", "normal")
        if self.scheme not in schemes:
            raise ValueError(f"init.scheme {self.scheme!r} is not one of {', '.join(schemes)}")
        if not self.gain > 0 or not self.std > 0:
            raise ValueError(f"init.gain and init.std must be > 0, got {self.gain}, {self.std}")
        if self.conv_truncation is not None and (self.scheme != "normal" or not self.conv_truncation > 0):
            raise ValueError(f"init.conv_truncation truncates init.scheme normal's draws: it needs scheme 'normal' and "
                             f"a value > 0 (in stds), got scheme {self.scheme!r}, {self.conv_truncation}")


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # not the transposed ones, which are no subclasses of these
_LAYERS = (nn.Linear, *_CONVS, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@torch.no_grad()
def initialize(net: nn.Module, init: Init) -> None:
    """Apply ``init`` to every linear / convolution layer of ``net`` (nothing, and no RNG draws, for the default)."""
    for layer in net.modules():
        if not isinstance(layer, _LAYERS):
            continue
        parametrized = parametrize.is_parametrized(layer, "weight")
        weight = layer.parametrizations.weight.original if parametrized else layer.weight
        if init.scheme == "orthogonal":
            nn.init.orthogonal_(weight, init.gain)
        elif init.scheme == "xavier_uniform":
            nn.init.xavier_uniform_(weight, init.gain)
        elif init.scheme == "xavier_normal":
            nn.init.xavier_normal_(weight, init.gain)
        elif init.scheme == "normal" and init.conv_truncation and isinstance(layer, _CONVS):
            bound = init.conv_truncation * init.std
            nn.init.trunc_normal_(weight, 0.0, init.std, -bound, bound)
        elif init.scheme == "normal":
            nn.init.normal_(weight, 0.0, init.std)
        if init.zero_bias and layer.bias is not None:
            nn.init.zeros_(layer.bias)

"""Writing matplotlib figures the same way everywhere."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["save_figure", "PALETTE"]

PALETTE = 256  # colours of a saved PNG figure


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write and close ``fig``; no software/version metadata, so equal figures give equal bytes. A PNG is
    stored with a palette of at most ``PALETTE`` colours (median cut, no dithering): exact for a figure of fewer
    colours, about 3x smaller than matplotlib's RGBA for the sample panels and curves of the tables' pages; the runs'
    own sample grids are not figures and keep every colour."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        rgb = Image.open(buffer).convert("RGB")
        rgb.quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True)
    else:
        fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path

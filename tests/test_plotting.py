"""Figures are written as palette PNGs: byte-stable, exact below 256 colours, close to matplotlib's render above."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from repro.plotting import PALETTE, save_figure


def _figure(image: np.ndarray, cmap: str | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.imshow(image, cmap=cmap, interpolation="nearest")
    ax.set_title("t", fontsize=6)
    return fig


def test_few_colours_are_kept_exactly_and_the_bytes_are_stable(tmp_path):
    blocks = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    a, b = save_figure(_figure(blocks), tmp_path / "a.png"), save_figure(_figure(blocks), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    image = Image.open(a)
    assert image.mode == "P" and not image.info.get("Software")
    colours = {c for _, c in image.convert("RGB").getcolors()}
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)} <= colours


def test_many_colours_become_a_palette_close_to_the_full_render(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # 1,600 distinct colours
    saved = np.asarray(Image.open(save_figure(_figure(noise), tmp_path / "n.png")).convert("RGB"), dtype=float)
    buffer = io.BytesIO()
    fig = _figure(noise)
    fig.tight_layout()  # as save_figure lays it out
    fig.savefig(buffer, format="png")
    full = np.asarray(Image.open(buffer).convert("RGB"), dtype=float)
    assert saved.shape == full.shape
    assert len(Image.open(tmp_path / "n.png").convert("RGB").getcolors(maxcolors=10_000)) <= PALETTE
    assert np.abs(saved - full).mean() < 8  # of 255 levels, over all pixels (measured: 4.9)

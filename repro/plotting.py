"""Writing matplotlib figures the same way everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write and close ``fig``; no software/version metadata, so equal figures give equal bytes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path

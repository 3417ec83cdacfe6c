"""The terminal console of repro's commands, and the library noise they hide: Lightning's "Tip" adverts and
deprecation / future warnings raised inside libraries (about the libraries' future, never the user's run)."""
from __future__ import annotations

import logging
import warnings

from rich.console import Console

__all__ = ["wide_console", "quiet_library_noise", "LIBRARIES"]

PIPE_WIDTH = 200  # columns when stdout is not a terminal (a log file, a pipe): rich would cut tables at 80
LIBRARIES = ("lightning", "lightning_fabric", "lightning_utilities", "torch", "torchvision", "torchmetrics",
             "torch_fidelity", "jsonargparse", "wandb")


def wide_console() -> Console:
    """A rich console: the terminal's width in a terminal, ``PIPE_WIDTH`` columns otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def quiet_library_noise(banners: bool = False) -> None:
    """Hide Lightning's "Tip" adverts and deprecation / future warnings whose source is a library; with ``banners``
    also its info lines ("Seed set to", "GPU available"), for a command that builds many models in one process."""
    if banners:
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())
    for library in LIBRARIES:
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")

"""The library noise ``repro`` hides: Lightning's "Tip" adverts and deprecation / future warnings raised
inside libraries (they are about the libraries' future, never about the user's run). Standard library only,
so the command line can call it before anything heavy is imported."""
from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_library_noise", "LIBRARIES"]

LIBRARIES = ("lightning", "lightning_fabric", "lightning_utilities", "torch", "torchvision", "torchmetrics",
             "torch_fidelity", "jsonargparse", "wandb")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def quiet_library_noise() -> None:
    """Hide Lightning's "Tip" adverts and deprecation / future warnings whose source is a library."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())
    for library in LIBRARIES:
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")

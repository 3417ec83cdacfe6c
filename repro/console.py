"""What ``repro fit`` prints around a run: the top of its ``--help`` and the library noise it hides.

``fit_help`` writes the text a user reads first in ``repro fit --help``: the variants, the model's own
arguments with one line each (from the ``GANModule`` docstring, so it cannot drift from the code) and what
``trainer.max_steps`` counts. ``quiet_library_noise`` drops Lightning's "Tip" adverts and deprecation
warnings raised inside libraries (they are about the libraries' future, never about the user's run).
"""
from __future__ import annotations

import argparse
import logging
import textwrap
import warnings

from jsonargparse import DefaultHelpFormatter

__all__ = ["fit_help", "FitHelpFormatter", "quiet_library_noise", "MAX_STEPS_HELP", "FIT_USAGE", "LIBRARIES"]

FIT_USAGE = "repro fit [--config FILE] [--KEY VALUE ...]   (the keys: below)"

MAX_STEPS_HELP = ("Generator updates to train for (each is model.n_dis discriminator steps and one generator step, "
                  "as the papers count them); -1: no limit. (type: int | None, default: from the config)")
LIBRARIES = ("lightning", "lightning_fabric", "lightning_utilities", "torch", "torchvision", "torchmetrics",
             "torch_fidelity", "jsonargparse", "wandb")


def _first_line(text: str) -> str:
    return " ".join(text.split(". ")[0].split()).rstrip(".")


def fit_help() -> str:
    """The description at the top of ``repro fit --help``."""
    from docstring_parser import parse

    from repro.variants import VARIANTS, GANModule

    params = parse(GANModule.__doc__ or "").params
    width = max(len(p.arg_name) for p in params)
    variants = ", ".join(f"repro.variants.{c.__name__}" for c in VARIANTS.values())
    lines = ["Train a GAN variant from YAML configs: repro fit --config configs/ring8/nsgan.yaml [--KEY VALUE ...]", "",
             textwrap.fill(f"Variants (--model.class_path): {variants}", 110, subsequent_indent="  "), "",
             "Model arguments every variant takes (--model.init_args.NAME VALUE; a variant's extra ones:",
             "repro fit --model.help NSGAN):"]
    lines += [f"  {p.arg_name:<{width}}  {_first_line(p.description or '')}".replace("``", "") for p in params]
    lines += ["", textwrap.fill("Training length: --trainer.max_steps N counts generator updates (each is model.n_dis "
                                "discriminator steps and one generator step), as the papers count them.", 110),
              "Outputs: runs/lightning_logs/version_N/ (printed at the end of the run)."]
    return "\n".join(lines)


class FitHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, keeping the description's line breaks (the argument list of ``fit_help``)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return argparse.RawDescriptionHelpFormatter._fill_text(self, text, width, indent)


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

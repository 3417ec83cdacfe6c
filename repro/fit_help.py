"""The top of ``repro fit --help``: the variants, the model's own arguments with one line each (from the
``GANModule`` docstring, so it cannot drift from the code) and what ``trainer.max_steps`` counts, plus the
help of ``--trainer.max_steps`` itself (Lightning's says "steps"). Used by ``repro.fit``."""
from __future__ import annotations

import argparse
import textwrap

from jsonargparse import DefaultHelpFormatter

__all__ = ["fit_help", "FitHelpFormatter", "MAX_STEPS_HELP", "FIT_USAGE"]

FIT_USAGE = "repro fit [--config FILE] [--KEY VALUE ...]   (the keys: below)"
MAX_STEPS_HELP = ("Generator updates to train for (each is model.n_dis discriminator steps and one generator step, "
                  "as the papers count them); -1: no limit. (type: int | None, default: from the config)")


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

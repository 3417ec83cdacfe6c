"""The fit layer: a training run from YAML configs (LightningCLI / jsonargparse), with repro's checks.

``ReproCLI`` parses and builds a run; ``build_cli`` turns input errors into one-paragraph ``UserError``s;
``run_fit`` runs the variant's preparation when its cached result is missing and then trains;
``parse_config`` parses without building anything (a table's config checks, ``repro.tables.resolve``). The
command line (``repro.cli``), the table runner and the benchmark all build runs through this module.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from repro.callbacks import (
    ConditioningTrace,
    DivergenceStop,
    FinalEvaluation,
    ResumableCheckpoint,
    SamplePlots,
    SpectraPlots,
)
from repro.data import GANDataModule
from repro.ensemble import check_supported
from repro.ensemble.run import EnsembleOptions, build_ensemble
from repro import REPO_ROOT
from repro.checkpoints import SAFE_GLOBALS, ConfigStamp, check_resume
from repro.configfiles import resolve_config_args
from repro.errors import UserError
from repro.callbacks.intervals import scale_intervals
from repro.callbacks.progress import install_run_display
from repro.fit_help import FIT_USAGE, MAX_STEPS_HELP, FitHelpFormatter, fit_help
from repro.loggers import GeneratorStepStamp, WandbOptions, with_loggers
from repro.preflight import check_run, check_sizes
from repro.variants import VARIANTS, GANModule

__all__ = ["ReproCLI", "REPO_ROOT", "UserError", "build_cli", "run_fit", "prepare", "parse_config",
           "has_preparation", "resolve_config_args", "concise_error"]

# repro passes argv to LightningCLI itself; Lightning warns about that by design.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter")


def probe_cuda_once() -> None:
    """On a machine without a visible GPU, make ``torch.cuda.is_available()`` cheap again.

    Every Adam / AdamW step asks it (``Optimizer._accelerator_graph_capture_health_check``). Lightning sets
    ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import, under which each call loads NVML afresh (~0.1 ms here), uncached
    until CUDA initializes, which a CPU run never does: ~0.2 ms per GAN iteration. With no GPU (NVML's count 0, or
    no NVML) there is no CUDA state a fork could inherit, so the runtime check (cached by torch, ~2 us) is used.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


class ReproCLI(LightningCLI):
    """LightningCLI with a variant chosen by ``model.class_path`` and one shared data module."""

    def __init__(self, args: list[str] | None = None, **kwargs: object):
        probe_cuda_once()
        super().__init__(
            GANModule,
            GANDataModule,
            subclass_mode_model=True,
            run=False,
            args=args,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
                "enable_model_summary": False,
            },
            # parse errors raise (not print usage and exit) so `build_cli` can report them as one paragraph
            parser_kwargs={"prog": "repro fit", "usage": FIT_USAGE, "description": fit_help(),
                           "formatter_class": FitHelpFormatter, "exit_on_error": False},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(SamplePlots, "samples")
        parser.add_lightning_class_args(FinalEvaluation, "evaluation")
        parser.add_lightning_class_args(DivergenceStop, "divergence")
        parser.add_lightning_class_args(SpectraPlots, "spectra")
        parser.add_lightning_class_args(ConditioningTrace, "conditioning")
        parser.add_lightning_class_args(ResumableCheckpoint, "resumable")
        parser.add_class_arguments(WandbOptions, "wandb")
        parser.add_class_arguments(EnsembleOptions, "ensemble")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="checkpoint to resume from")
        parser._option_string_actions["--trainer.max_steps"].help = MAX_STEPS_HELP

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The configured trainer, with a CSV logger always on and W&B added if ``wandb.enabled`` (for a seed
        ensemble, to each member's loggers instead: ``repro.ensemble.run``)."""
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config.as_dict()
        trainer.callbacks.append(ConfigStamp(config))
        wandb = None if self.config_init["ensemble"].size is not None else self.config_init.get("wandb")
        trainer.loggers = with_loggers(trainer.loggers, wandb, self.model, self.datamodule, config)
        scale_intervals(trainer, bool(wandb and wandb.enabled))
        trainer.callbacks.append(GeneratorStepStamp())
        install_run_display(trainer)
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; a jsonargparse error becomes a ``ValueError`` (``build_cli`` shortens it)."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ValueError(str(err)) from None

    def before_instantiate_classes(self) -> None:
        """Refuse negative network sizes by key before torch meets them (``repro.preflight.check_sizes``)."""
        check_sizes(self.config.as_dict())

    def after_instantiate_classes(self) -> None:
        """Refuse, before any training, settings outside their domain, data the networks cannot take, missing
        evaluation inputs (``repro.preflight``) and checkpoints that cannot resume the run (``repro.checkpoints``);
        with ``ensemble.size``, build the seed ensemble (``repro.ensemble``)."""
        ensemble = self.config_init["ensemble"].size is not None
        if ensemble:
            check_supported(self.model)  # an ensemble's refusal first: it is the one to act on
        check_run(self.model, self.datamodule, self.trainer)
        self.model.check_schedule(self.trainer.max_steps)
        if ensemble:
            build_ensemble(self)
        if self.config.get("ckpt_path"):
            defaults = {f"evaluation.{name}": p.default
                        for name, p in inspect.signature(FinalEvaluation).parameters.items()}
            check_resume(Path(self.config["ckpt_path"]), self.model, self.config.as_dict(), defaults)


class _ParseOnly(ReproCLI):
    """``ReproCLI`` that stops after parsing: building models and data is the training run's job."""

    def instantiate_classes(self) -> None:
        """Only parse."""

    def after_instantiate_classes(self) -> None:
        """Nothing was instantiated."""

    def _set_seed(self) -> None:
        """The run seeds itself."""


_ERROR_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
                "- Expected a <class 'NoneType'>")


def concise_error(text: str) -> str:
    """jsonargparse's nested error report as one line: the failing keys and reasons, without dumps of
    the whole namespace; a bad ``model.class_path`` also lists the registered variants."""
    lines = [ln.strip() for ln in text.splitlines()]
    kept = [ln.removeprefix("- ") for ln in lines if ln and not ln.startswith(_ERROR_NOISE)]
    message = " ".join(kept)
    if "Problem with given class_path" in message and 'Parser key "model"' in message and "has no attribute" in message:
        valid = ", ".join(f"repro.variants.{cls.__name__}" for cls in VARIANTS.values())
        message += f"; valid model.class_path values: {valid}"
    return message


def build_cli(args: list[str]) -> ReproCLI:
    """Parse and instantiate a fit configuration; input errors become ``UserError``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return ReproCLI(args=resolve_config_args(args))
    except MisconfigurationException as err:  # Lightning's own checks of trainer options
        raise UserError(f"trainer: {concise_error(str(err))}") from err
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        raise UserError(concise_error(str(err))) from err


def parse_config(args: list[str]) -> Namespace:
    """The resolved config of ``repro fit ARGS`` without building anything; errors raise as jsonargparse's
    (``ValueError`` / ``SystemExit``), for the caller to report."""
    return _ParseOnly(args=resolve_config_args(args)).config


def has_preparation(class_path: str) -> bool:
    """Whether the variant at ``class_path`` (e.g. ``repro.variants.RFGAN``) overrides ``GANModule.prepare``."""
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls.prepare is not GANModule.prepare


def prepare(cli: ReproCLI) -> str | None:
    """Run the configured variant's preparation (``GANModule.prepare``); returns what it made."""
    return cli.model.prepare(cli.datamodule)


def run_fit(args: list[str]) -> ReproCLI:
    """Parse and instantiate (input errors become ``UserError``), run the variant's preparation if its
    cached result is missing (saying so), then train."""
    cli = build_cli(args)
    missing = cli.model.preparation_missing(cli.datamodule)
    if missing:
        name = type(cli.model).__name__
        print(f"{name}: {missing}; preparing it now (`repro prepare` with the same arguments does only this)",
              file=sys.stderr, flush=True)
        print(f"{name}: prepared {prepare(cli)}", file=sys.stderr, flush=True)
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"), weights_only=True)
    record = next((cb.record for cb in cli.trainer.callbacks if isinstance(cb, FinalEvaluation)), {})
    if record.get("status") == "stopped":
        print(f"repro fit: {record['stop_reason']}; recorded as status 'stopped', not finished", file=sys.stderr)
    return cli

"""The ``repro`` command: ``fit`` through LightningCLI (jsonargparse YAML configs) plus repro's own commands."""
from __future__ import annotations

import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Callable

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from rich.console import Console

from repro.callbacks import (
    ConditioningTrace,
    DivergenceStop,
    FinalEvaluation,
    ResumableCheckpoint,
    SamplePlots,
    SpectraPlots,
)
from repro.callbacks.divergence import DIVERGED_EXIT_CODE, TrainingDiverged
from repro.callbacks.progress import install_run_display
from repro.console import FIT_USAGE, MAX_STEPS_HELP, FitHelpFormatter, fit_help, quiet_library_noise
from repro.data import GANDataModule
from repro.loggers import GeneratorStepStamp, WandbOptions, scale_intervals, with_loggers
from repro.variants import RFGAN, GANModule
from repro.variants.rfgan import MissingPretrainedWeights

__all__ = ["ReproCLI", "main", "REPO_ROOT", "run_fit"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# repro passes argv to LightningCLI itself; Lightning warns about that by design.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
DEFAULT_TABLE = "quickstart"


class UserError(Exception):
    """A problem with the user's input: reported as one paragraph, no traceback."""


class ReproCLI(LightningCLI):
    """LightningCLI with a variant chosen by ``model.class_path`` and one shared data module."""

    def __init__(self, args: list[str] | None = None, **kwargs: object):
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
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="checkpoint to resume from")
        parser._option_string_actions["--trainer.max_steps"].help = MAX_STEPS_HELP

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The configured trainer, with a CSV logger always on and W&B added if ``wandb.enabled``."""
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config.as_dict()
        wandb = self.config_init.get("wandb")
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

    def after_instantiate_classes(self) -> None:
        """Refuse, before any training, data the networks cannot take and checkpoints that cannot resume them."""
        self.model.check_sample_shape(self.datamodule.sample_shape)
        self.model.check_schedule(self.trainer.max_steps)
        if self.config.get("ckpt_path"):
            check_checkpoint(Path(self.config["ckpt_path"]), self.model)


def check_checkpoint(path: Path, model: GANModule) -> None:
    """Raise ``ValueError`` unless ``path`` is a readable repro checkpoint whose weights fit ``model``."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: {path} is not a file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError / ... for bad files
        raise ValueError(f"ckpt_path: {path} is not a readable PyTorch checkpoint (corrupt or truncated?): "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "repro_rng" not in ckpt:
        raise ValueError(f"ckpt_path: {path} was not written by `repro fit` (no state_dict / repro_rng entries)")
    mine = model.state_dict()
    theirs = ckpt["state_dict"]
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    shapes = [k for k in set(mine) & set(theirs) if tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or shapes:
        what = "; ".join(f"{label}: {', '.join(keys[:3])}" for label, keys in
                         (("missing", missing), ("unexpected", extra), ("other shape", sorted(shapes))) if keys)
        raise ValueError(f"ckpt_path: {path} holds a different model than the one configured ({what}); "
                         "resume with the config the checkpoint was trained with")


def resolve_config(path: str) -> str:
    """A config path as given, or relative to the repository root."""
    if Path(path).exists():
        return path
    candidate = REPO_ROOT / path
    if candidate.exists():
        return str(candidate)
    raise UserError(f"config file {path!r} not found (looked in {Path.cwd()} and {REPO_ROOT})")


def _fix_config_args(args: list[str]) -> list[str]:
    out = list(args)
    for i, a in enumerate(out):
        if a in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + resolve_config(a.split("=", 1)[1])
    return out


_ERROR_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
                "- Expected a <class 'NoneType'>")


def concise_error(text: str) -> str:
    """jsonargparse's nested error report as one line: the failing keys and reasons, without dumps of
    the whole namespace; a bad ``model.class_path`` also lists the registered variants."""
    from repro.variants import VARIANTS

    lines = [ln.strip() for ln in text.splitlines()]
    kept = [ln.removeprefix("- ") for ln in lines if ln and not ln.startswith(_ERROR_NOISE)]
    message = " ".join(kept)
    if "Problem with given class_path" in message and 'Parser key "model"' in message and "has no attribute" in message:
        valid = ", ".join(f"repro.variants.{cls.__name__}" for cls in VARIANTS.values())
        message += f"; valid model.class_path values: {valid}"
    return message


def build_cli(args: list[str]) -> ReproCLI:
    """Parse and instantiate a fit configuration; input errors become ``UserError``."""
    try:
        return ReproCLI(args=_fix_config_args(args))
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        raise UserError(concise_error(str(err))) from err


def run_fit(args: list[str]) -> ReproCLI:
    """Parse and instantiate (input errors become ``UserError``), then train."""
    cli = build_cli(args)
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    except MissingPretrainedWeights as err:
        raise UserError(str(err)) from err
    return cli


def _cmd_fit(args: list[str]) -> None:
    run_fit(args)


def _table_roots() -> list[Path]:
    return list(dict.fromkeys([Path.cwd().resolve(), REPO_ROOT]))


def _cmd_reproduce(args: list[str]) -> None:
    """Run a paper table's unfinished (row, seed) runs, then write its page; default: the CPU table ``toy``."""
    import argparse

    import torch

    from repro.tables import report, runner, spec

    parser = argparse.ArgumentParser(prog="repro reproduce", description=_cmd_reproduce.__doc__)
    parser.add_argument("table", nargs="?", default=DEFAULT_TABLE, help=f"table name or spec path (default: {DEFAULT_TABLE})")
    parser.add_argument("--devices", type=int, default=torch.cuda.device_count() or os.cpu_count() or 1,
                        help="parallel runs: GPUs, or CPU processes (default: all GPUs, else all cores)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the spec's)")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows")
    parser.add_argument("--dry-run", action="store_true", help="resolve every config, print the plan, train nothing")
    parser.add_argument("--report-only", action="store_true", help="write the page from the finished runs, train nothing")
    parser.add_argument("--wandb", action="store_true",
                        help="also log every run to W&B: one group per table, runs named <row>/seed<k> (offline "
                             "without WANDB_API_KEY; README: syncing an offline table)")
    opts = parser.parse_args(args)
    try:
        table = spec.load_spec(spec.find_spec(opts.table, _table_roots()))
        if not opts.report_only:
            runner.reproduce(table, opts.devices, opts.seeds, opts.only, opts.dry_run, wandb=opts.wandb)
        if not opts.dry_run:
            page = report.write_report(table)
            console = Console()
            console.print(report.summary_table(table))
            figures = sorted((page.parent / "figures" / table.name).glob("*.png"))
            console.print(f"page: {page}", *(f"figure: {f}" for f in figures), sep="\n")
    except spec.SpecError as err:
        raise UserError(str(err)) from None


def _cmd_tables(args: list[str]) -> None:
    """List every table spec with its rows and how many of their runs are finished."""
    from repro.tables import runner, spec

    if args:
        raise UserError(f"`repro tables` takes no arguments, got {' '.join(args)}")
    roots = _table_roots()
    for path in dict.fromkeys(p.resolve() for root in roots for p in spec.list_specs(root)):
        try:
            table = spec.load_spec(path)
        except spec.SpecError as err:
            print(f"{path.stem}: INVALID: {err}")
            continue
        runs = runner.plan(table)
        done = sum(runner.is_done(r) for r in runs)
        print(f"{table.name}: {table.title} [{done}/{len(runs)} runs done]")
        for row in table.rows:
            mine = [r for r in runs if r.row.id == row.id]
            print(f"    {row.id:<28} {sum(runner.is_done(r) for r in mine)}/{len(mine)}")


def _cmd_pretrain_ae(args: list[str]) -> None:
    """Pre-train and cache RFGAN's autoencoder for the data and model of a fit configuration."""
    cli = build_cli(args)
    if not isinstance(cli.model, RFGAN):
        raise UserError(f"model.class_path: pretrain-ae needs repro.variants.RFGAN, got {type(cli.model).__name__}")
    print(f"autoencoder weights: {cli.model.pretrain(cli.datamodule)}")


def _cmd_bench(args: list[str]) -> None:
    """Time repro against the bare-PyTorch reference loop (``repro bench --help``)."""
    from repro.bench import main as bench_main  # imported here: repro.bench imports this module

    bench_main(args)


def _cmd_train_classifier(args: list[str]) -> None:
    """Train the MNIST classifier behind classifier FID/KID/IS and stacked-MNIST modes, deterministically;
    writes its weights, and a record (command, test accuracy, sha256) beside them."""
    import argparse

    from repro.data.module import default_data_root
    from repro.nets.classifier import CLASSIFIER_WEIGHTS, train_classifier

    parser = argparse.ArgumentParser(prog="repro train-classifier", description=_cmd_train_classifier.__doc__)
    parser.add_argument("--data_root", default=None, help="folder holding MNIST/raw (default: $REPRO_DATA_DIR or ./data)")
    parser.add_argument("--out", default=str(CLASSIFIER_WEIGHTS), help="weights file (default: the committed one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)
    root = Path(opts.data_root) if opts.data_root else default_data_root()
    if not (root / "MNIST" / "raw").is_dir():
        raise UserError(f"--data_root: no MNIST/raw under {root.resolve()}; point it (or REPRO_DATA_DIR) at the MNIST folder")
    command = "repro train-classifier " + " ".join(args)
    record = train_classifier(root, Path(opts.out), epochs=opts.epochs, seed=opts.seed, command=command.strip())
    print(f"test accuracy {record['test_accuracy']:.4f}; weights {opts.out} (sha256 {record['sha256']})")


COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "fit": (_cmd_fit, "train one variant from YAML configs (LightningCLI; `repro fit --help`)"),
    "reproduce": (_cmd_reproduce, f"run a paper table and write its page (default: the CPU table `{DEFAULT_TABLE}`)"),
    "pretrain-ae": (_cmd_pretrain_ae, "pre-train RFGAN's autoencoder (same arguments as `fit`)"),
    "tables": (_cmd_tables, "list the paper tables, their rows and how many runs are done"),
    "train-classifier": (_cmd_train_classifier, "train the MNIST classifier used by classifier FID/IS/KID"),
    "bench": (_cmd_bench, "time an iteration: repro vs a bare-PyTorch loop, fp32 / bf16 (`repro bench --help`)"),
}


def _usage() -> str:
    lines = ["usage: repro COMMAND [options]", "", "Reproduce GAN papers' results. Commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Example: repro fit --config configs/ring8/wgangp.yaml --trainer.max_steps 2000"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    quiet_library_noise()
    if command not in COMMANDS:
        print(f"repro: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    try:
        COMMANDS[command][0](rest)
    except TrainingDiverged as err:
        print(f"repro {command}: {err}", file=sys.stderr)
        raise SystemExit(DIVERGED_EXIT_CODE) from None
    except UserError as err:
        if os.environ.get("REPRO_DEBUG"):
            raise
        print(f"repro {command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

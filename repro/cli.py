"""The ``repro`` command: one function per sub-command, nothing else imports this module.

Each command imports the layer it drives when it runs (``repro.fit``, ``repro.tables.runner``,
``repro.bench``, ``repro.metrics.classifier``): those load torch and Lightning, which take seconds,
so ``repro --help``, ``repro tables`` and ``repro reproduce --dry-run`` start without them (the dry-run checks rows
from cached parses, ``repro.tables.resolve``). ``--report-only`` imports the fit layer only for rows whose parse
is not cached.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from repro import REPO_ROOT
from repro.allocator import tune_malloc
from repro.console import quiet_library_noise, wide_console
from repro.errors import DIVERGED_EXIT_CODE, RUNS_FAILED_EXIT_CODE, USER_ERROR_EXIT_CODE, TrainingDiverged, UserError
from repro.record import DONE, status_of
from repro.tables import estimate, jobs, plan, preview, report, resolve, spec

__all__ = ["main", "COMMANDS"]

DEFAULT_TABLE = "quickstart"


def _cmd_fit(args: list[str]) -> None:
    from repro.fit import run_fit  # Lightning: seconds to import

    run_fit(args)


def _cmd_prepare(args: list[str]) -> None:
    """Run the configured variant's preparation (e.g. RFGAN's autoencoder pre-training) and cache it."""
    from repro.fit import build_cli, prepare  # Lightning: seconds to import

    made = prepare(build_cli(args))
    print(f"prepared: {made}" if made else "this variant has no preparation step; nothing to do")


def _table_roots() -> list[Path]:
    return list(dict.fromkeys([Path.cwd().resolve(), REPO_ROOT]))


def _cmd_reproduce(args: list[str]) -> None:
    """Run a paper table's unfinished (row, seed) runs, then write its page; default: the CPU table ``quickstart``."""
    parser = argparse.ArgumentParser(prog="repro reproduce", description=_cmd_reproduce.__doc__)
    parser.add_argument("table", nargs="?", default=DEFAULT_TABLE, help=f"table name or spec path (default: {DEFAULT_TABLE})")
    parser.add_argument("--devices", type=int, default=None,
                        help="parallel runs: GPUs, or CPU processes (default: all GPUs, else all cores)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the spec's)")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the stale records, train nothing; fast (no Lightning): each row is "
                             "checked from a cached parse of the same config files, code and libraries (made by "
                             "any earlier run, --report-only or --check-configs); rows without one are listed as "
                             "not checked: their config errors (unknown keys, bad values) are found only by "
                             "--check-configs or before a run trains")
    parser.add_argument("--check-configs", action="store_true",
                        help="with --dry-run: parse the rows not cached as a run does (imports Lightning, 10-30 s)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the page from the finished runs, train nothing (stale runs are listed on it)")
    stale = parser.add_mutually_exclusive_group()
    stale.add_argument("--rerun-stale", action="store_true",
                       help="bring finished runs whose config differs from what the spec gives now up to date "
                            "(records replaced): retrained, or, where only trainer.max_steps grew (and "
                            "evaluation.curve_points changed) and nothing in the model depends on the length, "
                            "continued from their saved final state (the same result)")
    parser.add_argument("--no-extend", action="store_true",
                        help="with --rerun-stale: retrain every stale run from step 0, continuing none")
    stale.add_argument("--accept-stale", action="store_true",
                       help="keep such runs; the page lists them as stale (default: stop before training)")
    parser.add_argument("--launcher", choices=("pool", "slurm", "local"), default="pool",
                        help="pool: subprocesses on this machine (default); slurm: SLURM job arrays through "
                             "submitit; local: submitit's local executor")
    for key, kind, text in (("partition", str, "SLURM partition"), ("time_min", int, "time limit per run, minutes"),
                            ("cpus_per_task", int, "CPUs per run"), ("mem_gb", int, "memory per run, GB")):
        parser.add_argument(f"--slurm-{key.replace('_', '-')}", dest=f"slurm_{key}", type=kind, default=None,
                            help=f"{text} (default: the spec's slurm.{key})")
    ensemble = parser.add_mutually_exclusive_group()
    ensemble.add_argument("--ensemble-size", type=int, default=None, metavar="K",
                          help="most seeds of a row trained together in one process (a seed ensemble; default: the "
                               "spec's ensemble_size, else all unfinished seeds of the row)")
    ensemble.add_argument("--no-ensemble", action="store_true",
                          help="one process per (row, seed) instead of seed ensembles")
    parser.add_argument("--length-scale", type=float, default=None, metavar="F",
                        help="train the rows not trained yet at F x their trainer.max_steps (0 < F < 1; finished "
                             "runs are kept as they are) and write no page: the shorter runs of the length check; "
                             "then `--rerun-stale` trains the spec's length, and each retrained run keeps its "
                             "shorter run's finals (README: length check)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log every run to W&B: one group per table, runs named <row>/seed<k> (offline "
                             "without WANDB_API_KEY; README: syncing an offline table)")
    opts = parser.parse_args(args)
    if opts.check_configs and not opts.dry_run:
        parser.error("--check-configs goes with --dry-run (a run parses every config before training)")
    if opts.no_extend and not opts.rerun_stale:
        parser.error("--no-extend goes with --rerun-stale (only stale runs are continued or retrained)")
    if opts.length_scale is not None and (opts.rerun_stale or opts.report_only):
        parser.error("--length-scale trains the shorter runs of rows not trained yet and writes no page: it never "
                     "replaces a finished run (--rerun-stale) and has no page of its own (--report-only)")
    console = wide_console()
    policy = ("rerun" if opts.rerun_stale else "accept" if opts.accept_stale or opts.length_scale is not None
              else "refuse")
    try:
        table = spec.load_spec(spec.find_spec(opts.table, _table_roots()))
        if opts.length_scale is not None:
            table = spec.with_length_scale(table, opts.length_scale)
            begun = jobs.started_unfinished(plan.plan(table, opts.seeds, opts.only))
            if begun:
                raise spec.SpecError(
                    f"--length-scale trains only runs not started yet; {len(begun)} begun at another length: "
                    f"{', '.join(begun[:4])}{' and more' if len(begun) > 4 else ''}. Leave them out (--only / "
                    f"--seeds) or finish them at the spec's length (`repro reproduce {table.name}`)")
        if opts.dry_run:
            preview.dry_run(table, console, opts.devices, opts.seeds, opts.only, policy, opts.launcher,
                            opts.ensemble_size, opts.no_ensemble, opts.check_configs, not opts.no_extend)
            return
        failures: list[str] = []
        if not opts.report_only:
            from repro.tables import runner  # trains: torch and Lightning, seconds to import

            slurm = {k.removeprefix("slurm_"): v for k, v in vars(opts).items() if k.startswith("slurm_")}
            written = runner.reproduce(table, opts.devices, opts.seeds, opts.only, console,
                                       stale=policy, launcher=opts.launcher, slurm=slurm, wandb=opts.wandb,
                                       ensemble_size=opts.ensemble_size, no_ensemble=opts.no_ensemble,
                                       extend=not opts.no_extend)
            failures = runner.failures(written)
        if opts.length_scale is not None:
            console.print(f"{table.name}: the runs at {opts.length_scale:g} x each row's length are the shorter runs "
                          f"of the length check; no page written (`repro reproduce {table.name} --rerun-stale` "
                          "trains the spec's length, keeping their finals)")
        else:
            records = plan.read_records(table)
            stale_runs = resolve.table_staleness(table, records, console if opts.report_only else None)
            page = report.write_report(table, records, stale={s.run.name: s.differences for s in stale_runs})
            console.print(report.summary_table(table, records))
            figures = sorted((page.parent / "figures" / table.name).glob("*.png"))
            console.print(f"page: {page}", *(f"figure: {f}" for f in figures), sep="\n")
    except spec.SpecError as err:
        raise UserError(str(err)) from None
    if failures:
        console.print(f"[red]{len(failures)} run(s) failed[/] (each continues from its checkpoint, or restarts, "
                      f"on the next `repro reproduce {table.name}`):")
        for line in failures:
            console.print(f"  {line}", markup=False, soft_wrap=True)
        raise SystemExit(RUNS_FAILED_EXIT_CODE)


def _cmd_tables(args: list[str]) -> None:
    """List every table spec with its rows, how many of their runs are finished and stale, and the compute that
    ``repro reproduce TABLE --rerun-stale`` still needs (``preview.backlog``: cached parses only, no Lightning)."""
    if args:
        raise UserError(f"`repro tables` takes no arguments, got {' '.join(args)}")
    by_name: dict[str, Path] = {}
    for root in _table_roots():  # the checkout you are in first: a table of the installed copy is listed once
        for path in spec.list_specs(root):
            by_name.setdefault(path.stem, path.resolve())
    for path in by_name.values():
        try:
            table = spec.load_spec(path)
        except spec.SpecError as err:
            print(f"{path.stem}: INVALID: {err}")
            continue
        state = preview.backlog(table)
        stale = {item.run.name for item in state.stale}
        print(f"{table.name}: {table.title} [{_table_standing(table.name, state, stale)}]")
        for row in table.rows:
            print(f"    {row.id:<28} {_done(_row_records(state.records, row.id), stale)}")


def _row_records(records: plan.Records, row: str) -> plan.Records:
    """The records of one row's runs."""
    return [(run, record) for run, record in records if run.row.id == row]


def _done(records: plan.Records, stale: set[str], noun: str = "") -> str:
    """``F/N[ noun]`` finished runs, and how many of them are stale."""
    done = sum(status_of(record) in DONE for _, record in records)
    n_stale = sum(run.name in stale for run, _ in records)
    return f"{done}/{len(records)}{noun}" + (f", {n_stale} stale" if n_stale else "")


def _table_standing(name: str, state: preview.Backlog, stale: set[str]) -> str:
    """A table's finished and stale runs, rows not checked for staleness, and what ``--rerun-stale`` still trains."""
    text = _done(state.records, stale, " runs done")
    if state.unchecked:
        text += f", {len(state.unchecked)} row(s) not checked for staleness (`repro reproduce {name} --dry-run --check-configs`)"
    if not state.estimates:
        return text
    known = [e for e in state.estimates if e.seconds is not None]
    cost = f"~{estimate.amount(known, 'GPU' if preview.visible_gpus() else 'core')}" if known else "no estimate"
    if known and len(known) < len(state.estimates):
        cost += f" ({len(state.estimates) - len(known)} of {len(state.estimates)} jobs without an estimate)"
    return text + f"; to run: {cost} (`repro reproduce {name}{' --rerun-stale' if stale else ''}`)"


def _cmd_bench(args: list[str]) -> None:
    """Time repro against the bare-PyTorch reference loop (``repro bench --help``), or seed ensembles against
    separate runs (``repro bench ensemble --help``)."""
    if args[:1] == ["ensemble"]:
        from repro.bench.ensemble import main as ensemble_main

        ensemble_main(args[1:])
        return
    from repro.bench import main as bench_main  # Lightning and torch: seconds to import

    bench_main(args)


def _cmd_train_classifier(args: list[str]) -> None:
    """Train the MNIST classifier behind classifier FID/KID/IS and stacked-MNIST modes, deterministically;
    writes its weights, and a record (command, test accuracy, sha256) beside them."""
    from repro.data.module import default_data_root  # Lightning: seconds to import
    from repro.metrics.classifier import CLASSIFIER_WEIGHTS, train_classifier  # torch

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
    "prepare": (_cmd_prepare, "run a variant's preparation, e.g. RFGAN's autoencoder (same arguments as `fit`)"),
    "tables": (_cmd_tables, "list the paper tables, their rows, runs done and stale, compute left"),
    "train-classifier": (_cmd_train_classifier, "train the MNIST classifier used by classifier FID/IS/KID"),
    "bench": (_cmd_bench, "time an iteration: repro vs a bare-PyTorch loop, fp32 / bf16 (`repro bench --help`)"),
}


def _usage() -> str:
    lines = ["usage: repro COMMAND [options]", "", "Reproduce GAN papers' results. Commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Example: repro fit --config configs/ring8/wgangp.yaml --trainer.max_steps 2000"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    quiet_library_noise()
    tune_malloc()
    if command not in COMMANDS:
        print(f"repro: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT_CODE)
    try:
        COMMANDS[command][0](rest)
    except TrainingDiverged as err:
        print(f"repro {command}: {err}", file=sys.stderr)
        raise SystemExit(DIVERGED_EXIT_CODE) from None
    except UserError as err:
        if os.environ.get("REPRO_DEBUG"):
            raise
        print(f"repro {command}: error: {err}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None

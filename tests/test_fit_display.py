"""What `repro fit` shows: a progress bar in generator updates with the losses, a closing summary, no
Lightning adverts or library deprecation noise, a --help that starts with the model's own arguments; and the
intervals that scale with max_steps, and the W&B arguments a table run gets."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from repro import REPO_ROOT
from repro.cli import main
from repro.console import LIBRARIES
from repro.callbacks.intervals import _interval


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_fit_shows_generator_progress_losses_and_a_summary(run_dir, capsys, recwarn):
    collect, lightning_log = _Collect(), logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.addHandler(collect)
    lightning_log.setLevel(logging.INFO)
    try:
        main(["fit", "--config", "configs/ring8/nsgan.yaml", "--trainer.max_steps", "20",
              "--data.num_samples", "1000", "--samples.every_n_steps", "0"])
    finally:
        lightning_log.removeHandler(collect)
        lightning_log.setLevel(level)
    out = capsys.readouterr().out
    assert "generator updates" in out and "20/20" in out and "d_loss" in out and "g_loss" in out
    assert "Epoch" not in out and "v_num" not in out  # not Lightning's batches-per-epoch bar
    folder = "runs/lightning_logs/version_0"
    assert f"run folder: {folder}" in out and "generator updates: 20 of 20" in out
    assert f"final metrics ({folder}/metrics.json)" in out and "modes_2500" in out
    assert f"figures: {folder}/samples/final.png" in out and f"checkpoint: {folder}/checkpoints/" in out
    assert any(m.startswith("GPU available") for m in collect.messages)  # the capture works ...
    assert not any("Tip" in m for m in collect.messages)  # ... and no advert reached it
    library = [w for w in recwarn if issubclass(w.category, (DeprecationWarning, FutureWarning))
               and any(f"/{lib}/" in w.filename for lib in LIBRARIES)]
    assert not library, [str(w.message) for w in library]


def test_fit_help_starts_with_the_model_arguments_and_max_steps():
    done = subprocess.run([sys.executable, "-m", "repro", "fit", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    top = "\n".join(done.stdout.splitlines()[:40])
    for name, text in (("n_dis", "discriminator steps per generator step"), ("lr_g, lr_d", "learning rates"),
                       ("ema_decay", "moving average")):
        assert any(line.strip().startswith(name) and text in line for line in top.splitlines()), name
    assert "repro.variants.NSGAN" in top and "--trainer.max_steps N counts generator updates" in top
    options = done.stdout.split("--trainer.max_steps MAX_STEPS", 2)[-1]
    assert " ".join(options.split()[:3]) == "Generator updates to"  # the option's own help, not Lightning's


@pytest.mark.parametrize(("configured", "max_steps", "points", "expected"),
                         [(None, 50, 10, 5), (1000, 50, 10, 5), (3, 50, 10, 3), (0, 50, 10, 0), (None, 5, 10, 1),
                          (100, 100_000, 100, 100), (5000, 100_000, 100, 1000)])
def test_intervals_scale_with_max_steps(configured, max_steps, points, expected):
    assert _interval(configured, max_steps, points) == expected


def test_table_runs_log_to_one_wandb_group_named_by_row_and_seed(tmp_path, monkeypatch):
    """`repro reproduce TABLE --wandb` adds ``Run.wandb_args`` to each run's `repro fit`: W&B group = the table,
    name = <row>/seed<k>, tags with the seed (the W&B logger is recorded, not started)."""
    from repro import loggers
    from repro.fit import build_cli
    from repro.tables.plan import Run, plan
    from repro.tables.spec import load_spec

    made = {}

    class Recorded(loggers.RunLogger):
        def __init__(self, **kwargs):
            made.update(kwargs)

        def log_config(self, config):
            made["config"] = config

    monkeypatch.setattr(loggers, "RunLogger", Recorded)
    monkeypatch.setattr(Run, "work_dir", property(lambda self: tmp_path / self.row.id / f"seed{self.seed}"))
    spec = load_spec(REPO_ROOT / "paper_tables" / "toy.yaml")
    run = next(r for r in plan(spec, seeds=[2]) if r.row.id == "nsgan-ring8")
    assert run.wandb_args() == ["--wandb.enabled", "true", "--wandb.table", "toy", "--wandb.variant", "nsgan-ring8"]
    build_cli([*run.fit_args(), *run.wandb_args()])
    assert made["group"] == "toy" and made["name"] == "nsgan-ring8/seed2" and made["job_type"] == "nsgan-ring8"
    assert {"toy", "nsgan-ring8", "seed2"} <= set(made["tags"]) and made["save_dir"] == str(run.work_dir)
    assert made["config"]["run"]["seed"] == 2

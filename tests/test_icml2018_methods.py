"""The icml2018-methods table's wiring: its rows build through the CLI (critic rows with the W1 diagnostic), and
the two variants' ring8 configs also train on grid25 (the toy table's second set)."""
from __future__ import annotations

import pytest

from repro import REPO_ROOT
from repro.callbacks.w1 import BatchW1Trace
from repro.fit import ReproCLI
from repro.tables.plan import Run, override_args
from repro.tables.spec import load_spec
from test_variants_cli import SHORTER, check_trained, train_from_config

SPEC = load_spec(REPO_ROOT / "paper_tables/icml2018-methods.yaml")


@pytest.mark.parametrize("row", SPEC.rows, ids=lambda r: r.id)
def test_rows_build_through_the_cli_with_the_w1_trace_on_the_critic_rows(row, run_dir, mnist_root):
    args = ["--config", str(row.config), *override_args({**SPEC.overrides, **row.overrides}),
            "--trainer.logger", "false", "--data.data_root", str(mnist_root)]
    cli = ReproCLI(args=args)
    traces = [cb for cb in cli.trainer.callbacks if isinstance(cb, BatchW1Trace)]
    assert len(traces) == (1 if row.id in ("wgangp", "wgan", "wgants") else 0)
    assert cli.trainer.max_steps == row.overrides["trainer.max_steps"]
    assert "--seed_everything" in Run(SPEC, row, 0).fit_args()


@pytest.mark.parametrize("variant", ["xicfg", "wgants"])
def test_ring8_config_trains_on_grid25(variant, run_dir):
    cli, before = train_from_config(f"configs/ring8/{variant}.yaml", "--data.dataset", "grid25",
                                    *SHORTER.get(variant, []))
    check_trained(cli, before)
    assert cli.datamodule.dataset == "grid25"

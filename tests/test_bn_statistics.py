"""G's batch-norm statistics at evaluation: the running averages training kept, or standing statistics re-estimated
at the evaluated weights (``evaluation.bn_standing_batches``), which leave training untouched."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from repro import REPO_ROOT
from repro.cli import main
from repro.data.toy import Geometry, make_toy
from repro.ema import kept_norm_statistics, standing_statistics
from repro.metrics.toy import mode_metrics
from repro.nets import MLPGenerator
from conftest import load_script

STEPS, BATCH, STANDING = 30, 50, 4
WIDE = Geometry(layout="ring", modes=8, std=0.5, radius=1.0)  # wide modes: a 30-step G already has high-quality samples
G_ARGS = dict(z_dim=2, out_dim=2, width=400, depth=4, batch_norm=True, hidden_bias=False, bn_momentum=0.05)


def test_kept_norm_statistics_puts_the_buffers_back_in_place():
    base = torch.zeros(2, 8)  # an ensemble member's buffers are views of the ensemble's
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8))
    net[1].running_mean = base[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with kept_norm_statistics(net):
        net.train()(torch.randn(16, 3) + 5.0)
        assert not torch.equal(net[1].running_mean, before["1.running_mean"])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert net[1].running_mean.data_ptr() == base[0].data_ptr() and torch.equal(base[0], torch.zeros(8))


def _fit(root: Path, *extra: str) -> tuple[dict, dict[str, torch.Tensor], Path]:
    main(["fit", "--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"),
          "--model.init_args.generator", str(REPO_ROOT / "configs/nets/pacgan_code_g.yaml"),
          "--trainer.max_steps", str(STEPS), "--data.batch_size", str(BATCH), "--data.num_samples", "500",
          "--data.dataset", "mixture", "--data.mixture", json.dumps(vars(WIDE)),
          "--samples.every_n_steps", "0", "--evaluation.n_samples", "500", "--evaluation.curve_points", "3",
          "--seed_everything", "3", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
          "--trainer.logger.init_args.save_dir", str(root), *extra])
    record = json.loads(next(root.rglob("metrics.json")).read_text())
    path = next(root.rglob("checkpoints/*.ckpt"))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return record, {k[len("generator."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("generator.")}, path


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple, tuple]:
    """The same 30-step run evaluated with running statistics and with standing ones."""
    root = tmp_path_factory.mktemp("bn")
    return _fit(root / "running"), _fit(root / "standing", "--evaluation.bn_standing_batches", str(STANDING))


def test_standing_statistics_at_evaluation_measure_the_evaluated_weights_and_leave_training_alone(fits):
    (plain, g_plain, _), (standing, g_standing, _) = fits
    # training untouched: the same weights and the same running averages, curve points included
    assert g_plain.keys() == g_standing.keys() and all(torch.equal(g_plain[k], g_standing[k]) for k in g_plain)
    assert [p[0] for p in plain["curves"]["modes_500"]] == [p[0] for p in standing["curves"]["modes_500"]]
    assert plain["train_seconds"] > 0 and "bn_statistics" not in plain["protocols"]["modes_500"]
    assert f"over {STANDING} batches of {BATCH}" in standing["protocols"]["modes_500"]["bn_statistics"]

    # by hand: the final metrics are those of the checkpoint's G with its statistics re-estimated, its own
    # running averages giving other samples; seed 1234 as the evaluation draws them
    _, _, mixture = make_toy("mixture", 10, 0, WIDE)
    g = MLPGenerator(**G_ARGS)
    g.load_state_dict(g_standing)

    def draw(net: nn.Module) -> torch.Tensor:
        torch.manual_seed(1234)
        with torch.no_grad():
            return net.eval()(torch.randn(500, 2))

    running_samples = draw(g)
    assert {f"{k}_500": v for k, v in mode_metrics(running_samples, mixture).items()} == pytest.approx(plain["metrics"])
    standing_statistics(g, 2, torch.device("cpu"), n_batches=STANDING, batch_size=BATCH)
    standing_samples = draw(g)
    assert not torch.allclose(running_samples, standing_samples)
    assert {f"{k}_500": v for k, v in mode_metrics(standing_samples, mixture).items()} == pytest.approx(
        standing["metrics"])


def test_a_negative_number_of_standing_batches_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "--evaluation.bn_standing_batches", "-1",
              "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path)])
    assert "evaluation.bn_standing_batches must be >= 0" in capsys.readouterr().err


def test_the_check_tool_scores_a_checkpoint_as_the_two_evaluations_did(fits, tmp_path, capsys):
    """``tools/bn_statistics_check.py`` on the final checkpoint: its ``running`` scores are the plain run's record,
    its ``standing`` scores the standing run's (the same weights: training is untouched by the option)."""
    (plain, _, path), (standing, _, _) = fits
    tool = load_script("tools/bn_statistics_check.py")
    tool.main([str(tmp_path / "out.json"), str(path), "--batches", str(STANDING), "--batch-size", str(BATCH),
               "--n-samples", "500"])
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["command"].startswith("python tools/bn_statistics_check.py") and len(out["runs"]) == 1
    run = out["runs"][0]
    assert run["generator_steps"] == STEPS and run["dataset"] == "mixture"
    assert run["running"] == pytest.approx(plain["metrics"]) and run["standing"] == pytest.approx(standing["metrics"])
    assert run["pacgan_refresh"] != run["running"]
    assert "| running |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "x.json"), str(tmp_path / "missing.ckpt")])

"""WGAN-TS (Liu, Gu & Samaras 2018): the exact batch W1 LP and its duals, the regression of D onto the
potentials, the OT regularizer and the weight scaling (issue 14)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from repro import REPO_ROOT
from repro.cli import main
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import WGANTS
from repro.variants.wgants import exact_w1, l1_cost, lipschitz_ratio, scale_weights, weight_layers
from conftest import load_script


def batch(n: int = 24, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_w1_of_a_shifted_copy_is_the_shift_l1_norm():
    x = batch()
    shift = torch.tensor([0.3, -1.2, 0.0, 2.0, -0.1], dtype=torch.float64)
    # any coupling pays E|x - y|_1 >= |E(x - y)|_1 = |shift|_1, and the identity coupling pays exactly that
    assert exact_w1(l1_cost(x, x + shift)).value == pytest.approx(float(shift.abs().sum()), abs=1e-9)


def test_w1_of_permuted_copies_is_zero_and_the_plan_undoes_the_permutation():
    x = batch()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    sol = exact_w1(l1_cost(x, x[perm]))
    assert sol.value == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(sol.match, perm)  # fake j = x[perm[j]] is matched to real perm[j]


def test_duals_are_feasible_centred_and_match_the_primal():
    x, y = batch(seed=0), batch(seed=1) * 0.5 + 1.0
    cost = l1_cost(x, y)
    sol = exact_w1(cost)
    slack = cost - (sol.phi[:, None] - sol.psi[None, :])
    assert slack.min() >= -1e-9  # phi_i - psi_j <= c_ij
    dual = sol.phi.mean() - sol.psi.mean()
    primal = (sol.plan * cost).sum()
    assert float(dual) == pytest.approx(sol.value, rel=1e-10) and float(primal) == pytest.approx(sol.value, rel=1e-10)
    assert float(sol.phi.sum() + sol.psi.sum()) == pytest.approx(0.0, abs=1e-9)  # centred as in the authors' code
    assert torch.allclose(sol.plan.sum(1), torch.full((24,), 1 / 24, dtype=torch.float64))
    assert slack[sol.match, torch.arange(24)].abs().max() < 1e-9  # the matched pairs are tight


def test_lp_at_batch_64_is_cheap():
    """4,096 constraints: ot.emd takes well under a millisecond unloaded (see the module docstring)."""
    cost = l1_cost(torch.rand(64, 784), torch.rand(64, 784))
    exact_w1(cost)
    start = time.perf_counter()
    exact_w1(cost)
    assert time.perf_counter() - start < 0.05


def test_regression_loss_for_a_linear_critic_is_the_ot_term_at_exact_targets():
    model = WGANTS(MLPGenerator(), MLPDiscriminator())
    w = torch.tensor([0.5, -2.0])
    model.discriminator = nn.Sequential(nn.Linear(2, 1, bias=False), nn.Flatten(0))
    model.discriminator[0].weight.data = w[None].clone()
    real, fake, direction = torch.randn(10, 2), torch.randn(10, 2), torch.sign(torch.randn(10, 2))
    target = torch.cat([real @ w, fake @ w])  # the MSE term is 0
    expected = 10.0 * (w - direction).square().sum(1).mean()  # lambda * mean ||grad_y D - direction||^2, grad_y D = w
    assert torch.allclose(model.regression_loss(real, fake, target, direction), expected)
    model.ot_weight = 0.0
    assert float(model.regression_loss(real, fake, target + 1.0, direction)) == pytest.approx(1.0)  # MSE alone


def test_regression_brings_the_critic_gap_to_the_lp_value():
    torch.manual_seed(0)
    real = torch.randn(32, 2) * 0.2 + torch.tensor([1.0, 0.0])
    fake = torch.randn(32, 2) * 0.2 - torch.tensor([1.0, 0.0])
    cost = l1_cost(real, fake)
    sol = exact_w1(cost)
    model = WGANTS(MLPGenerator(), MLPDiscriminator(width=64, depth=2))
    target = torch.cat([sol.phi, sol.psi]).float()
    direction = torch.sign(real[sol.match] - fake)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def gap() -> float:
        with torch.no_grad():
            return float(model.discriminator(real).mean() - model.discriminator(fake).mean())

    start = abs(gap() - sol.value)
    for _ in range(300):
        loss = model.regression_loss(real, fake, target, direction)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sol.value > 1.5  # the two clusters are ~2 apart in L1
    assert abs(gap() - sol.value) < 0.05 * sol.value < start


def test_weight_scaling_leaves_the_ratio_at_most_one():
    torch.manual_seed(0)
    # positively homogeneous D (no biases, LeakyReLU): scaling all 3 layers by s^(-1/3) divides D by s
    d = nn.Sequential(nn.Linear(2, 16, bias=False), nn.LeakyReLU(0.2), nn.Linear(16, 16, bias=False),
                      nn.LeakyReLU(0.2), nn.Linear(16, 1, bias=False), nn.Flatten(0))
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(3.0)
    real, fake = torch.randn(32, 2) + 1, torch.randn(32, 2) - 1
    cost = l1_cost(real, fake)
    d.requires_grad_(False)
    ratio = float(lipschitz_ratio(d(real), d(fake), cost))
    assert ratio > 1 and weight_layers(d) == 3
    assert scale_weights(d, ratio, weight_layers(d))
    after = float(lipschitz_ratio(d(real), d(fake), cost))
    assert after <= 1 + 1e-5 and after == pytest.approx(1.0, abs=1e-5)
    before = [p.clone() for p in d.parameters()]
    assert not scale_weights(d, after * 0.999, 3)  # nothing to do at ratio <= 1
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters()))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="regression_steps"):
        WGANTS(MLPGenerator(), MLPDiscriminator(), regression_steps=0)
    with pytest.raises(ValueError, match="ot_weight"):
        WGANTS(MLPGenerator(), MLPDiscriminator(), ot_weight=-1.0)


def short_run(tmp_path) -> Path:
    """The checkpoint of a 3-update WGAN-TS run on 256 MNIST digits (a G still far from the data)."""
    main(["fit", "--config", str(REPO_ROOT / "configs/mnist/wgants.yaml"), "--trainer.max_steps", "3",
          "--data.num_samples", "256", "--data.batch_size", "32", "--samples.every_n_steps", "0",
          "--evaluation.image_metrics", "false", "--evaluation.n_samples", "64", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path)])
    return next(tmp_path.rglob("checkpoints/*.ckpt"))


def test_regression_check_tool_fits_the_critic_to_its_batch(tmp_path, capsys):
    """``tools/wgants_regression_check.py`` on a short MNIST run's checkpoint: more regression steps bring the
    critic's gap on the regressed batch towards the LP value and lower the MSE onto the potentials."""
    ckpt = short_run(tmp_path)
    tool = load_script("tools/wgants_regression_check.py")
    tool.main([str(tmp_path / "out.json"), str(ckpt), "--steps", "2,30", "--lrs", "1e-3", "--batches", "1"])
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["command"].startswith("python tools/wgants_regression_check.py") and len(out["results"]) == 1
    result = out["results"][0]
    assert result["generator_steps"] == 3 and len(result["sha256"]) == 64
    start, short, long = sorted(result["rows"], key=lambda r: r["steps"])
    assert [start["steps"], short["steps"], long["steps"]] == [0, 2, 30] and start["lp_value"] > 0
    assert long["mse"] < start["mse"] / 2
    assert abs(1 - long["ratio_regressed_batch"]) < abs(1 - start["ratio_regressed_batch"])
    assert "| 0.001 | 30 |" in capsys.readouterr().out


def test_critic_fit_check_trains_fresh_critics_against_one_frozen_generator(tmp_path, capsys):
    """``tools/critic_fit_check.py``: every critic and seed is measured on the same (real, fake) pairs of a frozen G
    (so the exact W1 is the same at every point), WGAN-TS's fresh critic climbs towards the LP value against a G
    far from the data (a 3-update run), and each curve gets the flattening rule's verdict."""
    ckpt = short_run(tmp_path)
    tool = load_script("tools/critic_fit_check.py")
    critics = [str(REPO_ROOT / f"configs/mnist/{name}.yaml") for name in ("wgangp", "wgants")]
    tool.main([str(tmp_path / "out"), str(ckpt), "--critics", *critics, "--updates", "12", "--every", "2",
               "--pairs", "1", "--seeds", "0,1"])
    out = json.loads((tmp_path / "out" / "check.json").read_text())
    assert out["command"].startswith("python tools/critic_fit_check.py") and (tmp_path / "out" / "curves.png").exists()
    (result,) = out["results"]
    assert result["generator_steps"] == 3 and len(result["sha256"]) == 64
    runs = [run for config in critics for run in result["critics"][config]]
    assert [(run["variant"], run["seed"]) for run in runs] == [("WGANGP", 0), ("WGANGP", 1), ("WGANTS", 0), ("WGANTS", 1)]
    exact = {p["exact_l1"] for run in runs for p in run["points"]}
    assert len(exact) == 1 and exact.pop() > 0  # one frozen G, the same pairs throughout
    for run in runs:
        assert [p["updates"] for p in run["points"]] == [0, 2, 4, 6, 8, 10, 12]
    ts = result["critics"][critics[1]]
    assert all(run["points"][-1]["critic_over_l1"] > run["points"][0]["critic_over_l1"] + 0.05 for run in ts)
    assert len({run["points"][-1]["critic_over_l1"] for run in ts}) == 2  # the seeds' critics differ
    summary = result["summary"][critics[1]]
    assert summary["cost"] == "l1" and summary["n"] == 2
    assert summary["tail"]["state"] in ("flat", "moving", "undecided")
    finals, halves = ([run["points"][k]["critic_over_l1"] for run in ts] for k in (-1, 3))  # 12 and 6 updates
    assert summary["doubling"]["change"] == pytest.approx(sum(f - h for f, h in zip(finals, halves)) / 2)
    assert summary["mean"] == pytest.approx(sum(finals) / 2)
    assert result["summary"][critics[0]]["cost"] == "l2"
    assert "| WGANTS | L1 |" in capsys.readouterr().out

"""The batch-W1 diagnostic (repro/callbacks/w1.py): its two estimates on cases with a known answer, its log
through a CLI fit, that it leaves training untouched, and its refusal of a non-critic D."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from repro.callbacks.w1 import BatchW1Trace, batch_w1
from repro.fit import REPO_ROOT, ReproCLI


def test_exact_w1_of_a_shifted_copy_is_the_shift_l1_norm_and_critic_is_the_mean_difference():
    torch.manual_seed(0)
    real = torch.randn(12, 2, 3)
    shift = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])  # L1 norm 6.75, L2 norm sqrt(14.3125)
    fake = (real + shift)[torch.randperm(12)]  # permuted, so the LP has to find the matching
    d_real, d_fake = torch.randn(12), torch.randn(12)
    values = batch_w1(d_real, d_fake, real, fake)
    assert values["exact_l1"] == pytest.approx(6.75, abs=1e-6)
    assert values["exact_l2"] == pytest.approx(14.3125 ** 0.5, abs=1e-6)
    assert values["critic"] == pytest.approx(sum(d_real.tolist()) / 12 - sum(d_fake.tolist()) / 12, abs=1e-6)
    assert values["critic_over_l1"] == pytest.approx(values["critic"] / 6.75)


def test_a_linear_critic_with_sign_weights_recovers_a_coordinate_shift():
    """For y = x + c with c >= 0 coordinate-wise, D(x) = -sum(x) is 1-Lipschitz in L1 and optimal: ratio 1."""
    real = torch.randn(8, 5, dtype=torch.float64)
    fake = real + torch.tensor([0.0, 1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    values = batch_w1(-real.sum(1), -fake.sum(1), real, fake)
    assert values["exact_l1"] == pytest.approx(3.5) and values["critic_over_l1"] == pytest.approx(1.0)
    assert values["exact_l2"] == pytest.approx(5.25 ** 0.5)  # the same shift in L2: the critic overestimates it


def fit(variant: str, *callbacks: dict, steps: int = 4) -> ReproCLI:
    cli = ReproCLI(args=[
        "--config", str(REPO_ROOT / f"configs/ring8/{variant}.yaml"), "--trainer.max_steps", str(steps),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.log_every_n_steps", "2", "--seed_everything", "3", "--trainer.callbacks", json.dumps(list(callbacks)),
    ])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


TRACE = {"class_path": "repro.callbacks.w1.BatchW1Trace", "init_args": {"every_n_steps": 2}}


@pytest.mark.parametrize("variant", ["wgan", "wgants"])
def test_trace_is_logged_and_leaves_training_untouched(variant, run_dir):
    traced, plain = fit(variant, TRACE), fit(variant)
    assert any(isinstance(cb, BatchW1Trace) for cb in traced.trainer.callbacks)
    for a, b in zip(traced.model.generator.parameters(), plain.model.generator.parameters()):
        assert torch.equal(a, b)  # forked RNG, D in eval mode and no gradient: the same training
    with open(traced.trainer.logger.log_dir + "/metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("w1/exact_l1")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["w1/exact_l1"]) > float(r["w1/exact_l2"]) > 0 and r["w1/critic"] for r in rows)


def test_refuses_a_discriminator_that_is_no_critic(run_dir):
    with pytest.raises(ValueError, match="NSGAN does not train D with the Wasserstein loss"):
        fit("nsgan", TRACE, steps=1)


def test_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match="every_n_steps"):
        BatchW1Trace(every_n_steps=0)

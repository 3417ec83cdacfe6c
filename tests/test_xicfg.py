"""xICFG (Johnson & Zhang 2018): the functional-gradient push, the per-stage snapshots, the refit of G~,
the KL decrease with the exact log-ratio D, and the sampling cost (issue 14)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from repro.fit import REPO_ROOT, ReproCLI
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import XICFG
from repro.variants.xicfg import functional_gradient_push

# a short stage for tests: T = 3, refit on 2 x batch pairs for 2 epochs
SHORT = ["--model.init_args.functional_steps", "3", "--model.init_args.refit_batches", "2",
         "--model.init_args.refit_epochs", "2"]


class Quadratic(nn.Module):
    """D(x) = a.x + 0.5 sum_k q_k x_k^2, so grad D(x) = a + q * x."""

    def __init__(self, a: Tensor, q: Tensor):
        super().__init__()
        self.a, self.q = nn.Parameter(a), nn.Parameter(q)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.a + 0.5 * (self.q * x * x).sum(1)


class GaussianLogRatio(nn.Module):
    """The exact log-ratio D(x) = log N(x; mu*, s*^2) - log N(x; mu, s^2) in 1-D (the strong D of eq. 3)."""

    def __init__(self, mu_star: float, s_star: float, mu: float, s: float):
        super().__init__()
        self.params = (mu_star, s_star, mu, s)

    def forward(self, x: Tensor) -> Tensor:
        mu_star, s_star, mu, s = self.params
        x = x[:, 0]
        return -0.5 * ((x - mu_star) / s_star) ** 2 - math.log(s_star) + 0.5 * ((x - mu) / s) ** 2 + math.log(s)


def small_model(**kwargs) -> XICFG:
    model = XICFG(MLPGenerator(z_dim=2, out_dim=2, width=32, depth=2), MLPDiscriminator(width=32, depth=2), **kwargs)
    model._lean_steps = True  # no trainer: plain backward / optimizer steps
    return model


def test_push_is_x_plus_eta_grad_for_a_hand_differentiable_d():
    torch.manual_seed(0)
    x = torch.randn(16, 3, dtype=torch.float64)
    d1 = Quadratic(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64))
    d2 = Quadratic(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64))
    eta = 0.3
    one = functional_gradient_push(x, [d1], eta)
    assert torch.allclose(one, x + eta * (d1.a + d1.q * x), atol=1e-12)
    x1 = x + eta * (d1.a + d1.q * x)
    two = functional_gradient_push(x, [d1, d2], eta)  # G_2 = G_1 + eta grad D_2(G_1)
    assert torch.allclose(two, x1 + eta * (d2.a + d2.q * x1), atol=1e-12)
    assert not two.requires_grad and d1.a.grad is None  # detached; D's parameters untouched


def test_snapshots_are_distinct_frozen_copies_taken_during_the_stage(run_dir):
    cli = ReproCLI(args=["--config", str(REPO_ROOT / "configs/ring8/xicfg.yaml"), "--trainer.max_steps", "1",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
                         "--data.batch_size", "32", *SHORT])
    model = cli.model
    seen: list[dict[str, Tensor]] = []
    after = model.after_d_step

    def record(real: Tensor, fake: Tensor) -> None:
        after(real, fake)
        seen.append({k: v.clone() for k, v in model.discriminator.state_dict().items()})

    model.after_d_step = record
    cli.trainer.fit(model, datamodule=cli.datamodule)
    assert len(seen) == model.functional_steps == len(model.snapshots) == 3
    for t, snap in enumerate(model.snapshots):  # D_t is D as it was after the t-th update, not a reference to D
        state = snap.state_dict()
        assert all(torch.equal(state[k], seen[t][k]) for k in state)
        assert all(not p.requires_grad for p in snap.parameters())
    flat = [torch.cat([p.flatten() for p in s.parameters()]) for s in model.snapshots]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(3) for j in range(i + 1, 3))
    in_optimizers = {id(p) for opt in cli.trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert not in_optimizers & {id(p) for s in model.snapshots for p in s.parameters()}
    assert bool(model.approximator_initialized)


def test_refit_lowers_the_distance_to_the_pushed_targets():
    torch.manual_seed(0)
    model = small_model(lr_g=1e-3)
    opt = torch.optim.RMSprop(model.generator.parameters(), lr=1.0, alpha=0.95, eps=1e-18)
    z = torch.randn(640, 2)
    target = model.push(model.approximator(z)) + torch.tensor([0.5, -0.5])  # some distance away
    dist_before = (model.approximator(z) - target).norm(dim=1).mean()
    model.fit_approximator(z, target, opt, count_last_step=False)
    dist_after = (model.approximator(z) - target).norm(dim=1).mean()
    assert dist_after < 0.5 * dist_before
    assert opt.param_groups[0]["lr"] in [1e-3 * 0.1**k for k in range(4)]  # restarted at lr_g, then decays


class Ascent(torch.optim.Optimizer):
    """Gradient ascent: every epoch's loss rises."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=group["lr"])


@pytest.mark.parametrize("epochs, decays", [(3, 2), (12, 3)])
def test_refit_decays_the_learning_rate_when_the_loss_rises_at_most_three_times(epochs, decays):
    torch.manual_seed(0)
    model = small_model(lr_g=1e-3, refit_epochs=epochs)
    opt = Ascent(model.generator.parameters(), lr=123.0)  # the refit restarts it at lr_g
    model.fit_approximator(torch.randn(640, 2), torch.zeros(640, 2), opt, count_last_step=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**decays)


def test_initialization_fits_the_clamped_random_projection():
    torch.manual_seed(0)
    model = small_model(lr_g=1e-3)
    opt = torch.optim.RMSprop(model.generator.parameters(), lr=1e-3)
    before = model.approximator(torch.randn(640, 2)).abs().mean()
    model.initialize_approximator(640, opt)
    after = model.approximator(torch.randn(640, 2)).abs().mean()
    # the target clamp(z W, -1, 1), W ~ N(0, 0.01^2), is within ~0.03 of 0: G~ moves there from its init
    assert after < 0.2 * before and after < 0.05
    assert bool(model.approximator_initialized)


def test_functional_step_with_the_exact_log_ratio_moves_toward_the_data_and_lowers_kl():
    """p* = N(1, 0.5^2), p = N(-1, 1): with D = log p*/p, x' = x + eta grad D(x) is affine in x, so p' is
    Gaussian. The sample estimate of KL(p* || p') falls, and its slope at eta -> 0 is -E_p*[|grad D|^2]
    (Johnson & Zhang 2018, Thm. 2.1)."""
    torch.manual_seed(0)
    mu_star, s_star, mu, s = 1.0, 0.5, -1.0, 1.0
    d = GaussianLogRatio(mu_star, s_star, mu, s)
    x = (mu + s * torch.randn(200_000, 1, dtype=torch.float64))

    def kl_star(m: Tensor | float, v: Tensor | float) -> float:  # KL(N(mu*, s*^2) || N(m, v))
        v = torch.as_tensor(v, dtype=torch.float64)
        return float(0.5 * (torch.log(v / s_star**2) + (s_star**2 + (mu_star - torch.as_tensor(m)) ** 2) / v - 1))

    eta = 0.1
    pushed = functional_gradient_push(x, [d], eta)
    assert abs(pushed.mean() - mu_star) < abs(x.mean() - mu_star) - 0.2  # toward the data
    kl_before, kl_after = kl_star(x.mean(), x.var()), kl_star(pushed.mean(), pushed.var())
    assert kl_after < kl_before - 0.3
    # closed form of the pushed Gaussian: grad D(x) = (mu* - x)/s*^2 + (x - mu)/s^2 = a x + b
    a, b = -1 / s_star**2 + 1 / s**2, mu_star / s_star**2 - mu / s**2
    assert kl_after == pytest.approx(kl_star((1 + eta * a) * mu + eta * b, ((1 + eta * a) * s) ** 2), abs=0.02)
    # first-order decrease: dKL/deta at 0 = -E_p*[(grad D)^2] = -(a^2 (s*^2 + mu*^2) + 2 a b mu* + b^2)
    h = 1e-4
    slope = (kl_star((1 + h * a) * mu + h * b, ((1 + h * a) * s) ** 2) - kl_star(mu, s**2)) / h
    assert slope == pytest.approx(-(a**2 * (s_star**2 + mu_star**2) + 2 * a * b * mu_star + b**2), rel=1e-3)


@pytest.mark.parametrize("eta, contracts, kl_falls", [(9e-5, True, True), (1.9e-4, True, None), (2.1e-4, False, False),
                                                     (0.5, False, False)])
def test_functional_step_on_a_narrow_mode_is_stable_only_for_eta_below_twice_its_variance(eta, contracts, kl_falls):
    """p* = N(0, 0.01^2) (a ring8 mode's std), p = N(0.05, 0.1^2): with D = log p*/p the push is affine with slope
    1 + eta a, a = 1/s^2 - 1/s*^2, so it moves samples toward the mode only when |1 + eta a| < 1, i.e. eta < 2/|a| ~
    2 s*^2 = 2e-4 (the scale behind paper_tables/xicfg-eta.yaml); beyond it the spread and KL(p* || p) grow. KL falls
    near eta = (1 - s*/s)/|a| (the step that maps the spread onto s*), not for every contracting eta (a step near 2/|a|
    contracts but overshoots the variance)."""
    torch.manual_seed(0)
    mu_star, s_star, mu, s = 0.0, 0.01, 0.05, 0.1
    x = mu + s * torch.randn(100_000, 1, dtype=torch.float64)
    pushed = functional_gradient_push(x, [GaussianLogRatio(mu_star, s_star, mu, s)], eta)
    a = 1 / s**2 - 1 / s_star**2
    assert 2 / abs(a) == pytest.approx(2 * s_star**2, rel=0.02)
    # affine map of every sample: the spread scales by |1 + eta a| exactly
    assert float(pushed.std() / x.std()) == pytest.approx(abs(1 + eta * a), rel=1e-9)

    def kl_star(sample: Tensor) -> float:  # KL(N(mu*, s*^2) || N(mean, var)) of the sample's Gaussian fit
        m, v = float(sample.mean()), float(sample.var())
        return 0.5 * (math.log(v / s_star**2) + (s_star**2 + (mu_star - m) ** 2) / v - 1)

    closer = float((pushed - mu_star).abs().mean()) < float((x - mu_star).abs().mean())
    assert closer is contracts
    if kl_falls is not None:
        assert (kl_star(pushed) < kl_star(x)) is kl_falls


def test_sampling_costs_t_gradient_evaluations_of_d(monkeypatch):
    torch.manual_seed(0)
    model = small_model(functional_steps=4)
    calls = {"grad": 0, "live": 0, "snapshots": [0] * 4}
    model.discriminator.register_forward_hook(lambda *_: calls.__setitem__("live", calls["live"] + 1))
    for t, snap in enumerate(model.snapshots):
        snap.register_forward_hook(lambda *_, t=t: calls["snapshots"].__setitem__(t, calls["snapshots"][t] + 1))
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["grad"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    z = torch.randn(50, 2)
    out = model.sample(z=z)
    assert out.shape == (50, 2) and not out.requires_grad
    assert calls == {"grad": 4, "live": 0, "snapshots": [1, 1, 1, 1]}
    assert torch.equal(out, functional_gradient_push(model.approximator(z), model.snapshots, model.eta))
    with torch.inference_mode():  # as the image metrics sample: the push still differentiates D
        assert torch.equal(model.sample(z=z), out)


def test_fixed_options_are_refused():
    with pytest.raises(ValueError, match="ema_decay"):
        small_model(ema_decay=0.99)
    with pytest.raises(ValueError, match="functional_steps"):
        small_model(functional_steps=0)
    with pytest.raises(ValueError, match="eta"):
        small_model(eta=0.0)

"""WGAN-GP's penalty and WGAN's clipping, checked against their definitions."""
import pytest
import torch
from torch import nn

from repro.nets import MLPDiscriminator, MLPGenerator
from repro.regularizers import GradientPenalty
from repro.variants import WGAN, WGANGP


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


class Holder:
    """The parts of a GANModule the gradient penalty uses."""

    def __init__(self, critic):
        self.discriminate = critic

    @staticmethod
    def sample_noise(draw, n):
        return draw(n)

    @staticmethod
    def batch_mean(values):
        return values.mean()


@pytest.mark.parametrize("w", [[3.0, 4.0], [0.3, 0.1], [1.0, 0.0]])
def test_gradient_penalty_of_linear_critic(w):
    w = torch.tensor(w)
    gp = GradientPenalty(weight=10.0)
    torch.manual_seed(0)
    value = gp(Holder(Linear(w)), torch.randn(32, 2), torch.randn(32, 2))
    assert value.item() == pytest.approx(10.0 * (w.norm().item() - 1) ** 2, rel=1e-5, abs=1e-7)


def test_wgan_step_clips_every_critic_parameter(run_dir):
    import lightning as L

    from repro.data import GANDataModule

    d = MLPDiscriminator(width=32, depth=2)
    with torch.no_grad():
        for p in d.parameters():
            p.uniform_(-1, 1)  # start far outside [-c, c]
    model = WGAN(MLPGenerator(width=32, depth=2), d, clip=0.01, n_dis=1, lr_d=0.1)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=GANDataModule("ring8", batch_size=32, num_samples=256))
    params = torch.cat([p.flatten() for p in model.discriminator.parameters()])
    assert params.abs().max().item() <= 0.01 + 1e-8
    assert params.abs().max().item() == pytest.approx(0.01)  # clipping was active, not a no-op


def test_logged_penalty_and_critic_loss_of_a_linear_critic(run_dir):
    """WGAN-GP with a linear critic f(x) = w . x: every interpolate's input gradient is w, so each D step's
    penalty is 10 (||w|| - 1)^2 (Gulrajani et al. 2017, eq. 3) and its Wasserstein term w . (mean fake - mean real).
    The logged ``train/d_reg/gradient_penalty`` is the mean of the former over the n_dis = 5 D steps, and
    ``train/d_loss`` minus it the mean of the latter (w moves at every D step, so the mean is not one step's)."""
    import lightning as L

    from repro.data import GANDataModule

    model = WGANGP(MLPGenerator(width=16, depth=2), Linear(torch.tensor([0.3, 0.1])), lr_d=0.05)
    seen, d_loss = [], model.discriminator_loss

    def recording(real, fake, **labels):
        seen.append((model.discriminator.w.detach().clone(), real.detach().clone(), fake.detach().clone()))
        return d_loss(real, fake, **labels)

    model.discriminator_loss = recording
    logged = []

    class Logged(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            logged.append({k: float(v) for k, v in trainer.logged_metrics.items()})

    trainer = L.Trainer(max_steps=3, log_every_n_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[Logged()])
    trainer.fit(model, datamodule=GANDataModule("ring8", batch_size=32, num_samples=512))
    assert len(seen) == 3 * 5 and len(logged) == 3
    for t, row in enumerate(logged):
        steps = seen[5 * t: 5 * (t + 1)]
        penalty = sum(10.0 * (w.norm().item() - 1) ** 2 for w, _, _ in steps) / 5
        critic = sum((w @ (fake.mean(0) - real.mean(0))).item() for w, real, fake in steps) / 5
        assert row["train/d_reg/gradient_penalty"] == pytest.approx(penalty, rel=1e-5)
        assert row["train/d_loss"] - row["train/d_reg/gradient_penalty"] == pytest.approx(critic, abs=1e-4)
        assert not any(key.startswith("train/g_reg/") for key in row)
    assert {"d_loss", "g_loss", "d_reg/gradient_penalty"} == set(model.last_losses)
    assert abs(steps[0][0].norm() - steps[-1][0].norm()) > 0.05  # the penalty changed within a generator step


def test_critic_loss_is_objective_plus_each_named_term():
    """Two penalties of one class get distinct names; each logged term is the regularizer's value on the same
    inputs (same noise), and D's loss is the objective plus their sum."""
    extra = GradientPenalty(weight=1.0, center=0.0)
    model = WGANGP(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2), d_regularizers=[extra])
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    torch.manual_seed(0)
    loss = model.discriminator_loss(real, fake)
    torch.manual_seed(0)  # the same interpolation noise, drawn in the same order
    gp, gp2 = GradientPenalty(weight=10.0)(model, real, fake), extra(model, real, fake)
    assert model._terms.keys() == {"d_reg/gradient_penalty", "d_reg/gradient_penalty_2"}
    assert torch.equal(model._terms["d_reg/gradient_penalty"], gp.detach())
    assert torch.equal(model._terms["d_reg/gradient_penalty_2"], gp2.detach())
    assert not model._terms["d_reg/gradient_penalty"].requires_grad and gp.item() != gp2.item()
    wasserstein = model.discriminator(fake).mean() - model.discriminator(real).mean()
    assert loss.item() == pytest.approx((wasserstein + gp + gp2).item(), rel=1e-6)

"""WGAN-GP's penalty and WGAN's clipping, checked against their definitions."""
import pytest
import torch
from torch import nn

from repro.nets import MLPDiscriminator, MLPGenerator
from repro.regularizers import GradientPenalty
from repro.variants import WGAN


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

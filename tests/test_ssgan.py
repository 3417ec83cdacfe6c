"""SSGAN (Chen et al. 2019): the quarter-batch rotations, the rotation losses' formula and weights, and the
refusal of 2-D data."""
from __future__ import annotations

import math

import pytest
import torch

from repro.cli import main
from repro.fit import REPO_ROOT
from repro.nets import StandardCNNDiscriminator, StandardCNNGenerator
from repro.variants import SSGAN
from repro.variants.ssgan import RotationLoss, rotate_quarters


def test_rotate_quarters_by_hand():
    """8 images of 2x2: images 0-1 upright, 2-3 by 90 degrees, 4-5 by 180, 6-7 by 270 (counter-clockwise)."""
    x = torch.arange(8.0).view(8, 1, 1, 1) * 10 + torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    rotated, labels = rotate_quarters(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    by_label = {0: [[1, 2], [3, 4]], 1: [[2, 4], [1, 3]], 2: [[4, 3], [2, 1]], 3: [[3, 1], [4, 2]]}
    for i in range(8):
        assert (rotated[i, 0] - 10 * i).tolist() == by_label[labels[i].item()], i


def _model(**kwargs):
    torch.manual_seed(0)
    g = StandardCNNGenerator(z_dim=8, image_size=28, channels=1, width=2)
    d = StandardCNNDiscriminator(image_size=28, channels=1, width=2)
    return SSGAN(g, d, loss="hinge", **kwargs)


def test_rotation_losses_are_weighted_cross_entropy():
    model = _model(d_rotation_weight=1.0, g_rotation_weight=0.2)
    d_reg, g_reg = model.d_regularizers[-1], model.g_regularizers[-1]
    real, fake = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    logits = model.discriminator.rotation_logits(rotate_quarters(real)[0])
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    ce = -sum(torch.log_softmax(logits[i], 0)[labels[i]].item() for i in range(8)) / 8
    assert d_reg(model, real, fake).item() == pytest.approx(ce, rel=1e-5)
    logits_f = model.discriminator.rotation_logits(rotate_quarters(fake)[0])
    ce_f = -sum(torch.log_softmax(logits_f[i], 0)[labels[i]].item() for i in range(8)) / 8
    assert g_reg(model, torch.randn(8, 8), fake).item() == pytest.approx(0.2 * ce_f, rel=1e-5)
    # an untrained 4-way head is near chance: CE close to log 4
    assert abs(ce - math.log(4)) < 0.5
    # the head is a D parameter (stepped by D's optimizer); D's GAN output is the wrapped D's
    assert any(p is model.discriminator.rotation_head.weight for p in model.discriminator.parameters())
    assert torch.equal(model.discriminator(real), model.discriminator.inner(real))


def test_ssgan_refuses_two_dimensional_data(run_dir, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO_ROOT / "configs/mnist/ssgan.yaml"), "--data.dataset", "ring8",
              "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/mlp_d.yaml"),
              "--model.init_args.generator", str(REPO_ROOT / "configs/nets/mlp_g.yaml")])
    err = capsys.readouterr().err
    assert "square image data" in err and "Traceback" not in err


def test_rotation_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="RotationLoss"):
        RotationLoss(-1.0, "real")

"""Variants and regularizers that take D's input gradient per sample (GN-GAN, the WGAN-GP penalty, WGAN-TS's
OT term) refuse a D whose layers couple the samples of a batch (batch norm, minibatch discrimination)."""
from __future__ import annotations

import pytest
import torch
from conftest import load_config

from repro.nets import MinibatchDiscriminator, MLPDiscriminator, MLPGenerator
from repro.normalization import batch_coupling_names
from repro.regularizers import GradientPenalty, JacobianClamping
from repro.variants import GNGAN, NSGAN, WGANGP, WGANTS, XICFG


def minibatch_d() -> MinibatchDiscriminator:
    return MinibatchDiscriminator(MLPDiscriminator(width=8, depth=1), kernels=3, kernel_dim=2)


def g() -> MLPGenerator:
    return MLPGenerator(width=8, depth=1)


def test_coupling_layers_are_found():
    assert batch_coupling_names(MLPDiscriminator(width=8, depth=2)) == []
    assert batch_coupling_names(MLPDiscriminator(width=8, depth=2, norm="layer")) == []
    assert len(batch_coupling_names(MLPDiscriminator(width=8, depth=2, norm="batch"))) == 2
    assert batch_coupling_names(torch.nn.Sequential(torch.nn.BatchNorm1d(4))) == ["0"]
    assert batch_coupling_names(minibatch_d()) == ["minibatch"]


@pytest.mark.parametrize("d", [minibatch_d(), MLPDiscriminator(width=8, depth=1, norm="batch")],
                         ids=["minibatch", "batchnorm"])
def test_coupling_leaves_the_per_sample_gradient_undefined(d):
    """Why the refusal: row i of grad_x sum_j D(x_j) is grad D(x_i) (each sample alone) only without coupling."""
    torch.manual_seed(0)
    x = torch.randn(6, 2, requires_grad=True)
    (rows,) = torch.autograd.grad(d(x).sum(), x)
    others = [torch.cat([x[i:i + 1], x.detach()[:i], x.detach()[i + 1:]]) for i in range(len(x))]  # x_i first
    alone = torch.stack([torch.autograd.grad(d(batch)[0], x)[0][i] for i, batch in enumerate(others)])
    assert not torch.allclose(rows, alone, atol=1e-4)  # the other samples' terms dD(x_j)/dx_i are in rows
    plain = MLPDiscriminator(width=8, depth=1)
    (rows,) = torch.autograd.grad(plain(x).sum(), x)
    alone = torch.stack([torch.autograd.grad(plain(x[i:i + 1]).sum(), x)[0][i] for i in range(len(x))])
    assert torch.allclose(rows, alone, atol=1e-6)


@pytest.mark.parametrize("d", [minibatch_d, lambda: MLPDiscriminator(width=8, depth=1, norm="batch")],
                         ids=["minibatch", "batchnorm"])
def test_per_sample_gradient_users_refuse_coupling(d):
    for build, user in [(lambda: GNGAN(g(), d()), "GNGAN"), (lambda: WGANGP(g(), d()), "GradientPenalty"),
                        (lambda: NSGAN(g(), d(), d_regularizers=[GradientPenalty()]), "GradientPenalty"),
                        (lambda: WGANTS(g(), d()), "WGANTS")]:
        with pytest.raises(ValueError, match=f"model.discriminator: {user}.*without batch norm.*minibatch"):
            build()


def test_coupling_is_kept_where_no_per_sample_gradient_is_taken():
    NSGAN(g(), minibatch_d())  # minibatch discrimination's own setting
    NSGAN(g(), minibatch_d(), g_regularizers=[JacobianClamping()])  # a G term: no D gradient
    WGANTS(g(), MLPDiscriminator(width=8, depth=1, norm="batch"), ot_weight=0.0)  # the OT term is off
    XICFG(g(), MLPDiscriminator(width=8, depth=1, norm="batch"))  # the authors' D has batch norm
    model = WGANGP(g(), MLPDiscriminator(width=8, depth=1, norm="layer"), d_regularizers=[GradientPenalty(1.0)])
    assert [r.weight for r in model.d_regularizers] == [10.0, 1.0]  # its own penalty first, then the config's


def test_cli_refuses_gngan_with_minibatch_discrimination(run_dir):
    with pytest.raises(ValueError, match="GNGAN.*'minibatch' \\(MinibatchDiscrimination\\)"):
        load_config("configs/mnist/minibatch.yaml", "--model.class_path", "repro.variants.GNGAN")

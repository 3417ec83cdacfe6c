"""Spectral norm (Miyato et al. 2018, Alg. 1), its comparators, gradient normalization (Wu et al. 2021)
and the conv operator-norm diagnostic; SNGAN / GNGAN train from their YAML configs."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from test_variants_cli import check_trained, train_from_config

from repro.fit import REPO_ROOT, ReproCLI
from repro.losses import objective
from repro.metrics.lipschitz import conv_adjoint, conv_operator_norm, conv_operator_norms
from repro.nets import MLPDiscriminator, MLPGenerator, ResNetDiscriminator, StandardCNNDiscriminator
from repro.normalization import ShiftOnlyNorm, SpectralNorm, spectral_norm, wrap
from repro.regularizers import OrthonormalRegularizer
from repro.variants import GNGAN, NSGAN, SNGAN
from repro.variants.gngan import gradient_normalize


def sigma(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().flatten(1), 2))


def sn_state(layer: nn.Module) -> SpectralNorm:
    return layer.parametrizations.weight[0]


# ----------------------------------------------------------------------------- spectral norm
@pytest.mark.parametrize("make", [lambda: nn.Linear(40, 24), lambda: nn.Conv2d(8, 16, 3, 1, 1)], ids=["linear", "conv"])
def test_spectral_norm_converges_to_one_in_training_mode(make):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(3.0)  # a fixed weight far from sigma = 1
    raw = layer.weight.detach().clone()
    spectral_norm(layer).train()
    x = torch.randn(2, *((40,) if isinstance(layer, nn.Linear) else (8, 6, 6)))
    for _ in range(30):
        layer(x)
    assert torch.equal(layer.parametrizations.weight.original, raw)  # the raw weight is untouched
    assert sigma(raw) > 2.0
    assert abs(sigma(layer.weight) - 1.0) < 0.01


def test_spectral_norm_follows_algorithm_1_order():
    torch.manual_seed(1)
    layer = spectral_norm(nn.Conv2d(3, 5, 3))
    w = layer.parametrizations.weight.original.detach().flatten(1)
    u0 = sn_state(layer).u.clone()
    v = F.normalize(w.t() @ u0, dim=0)  # Alg. 1: v first, from the stored u ...
    u = F.normalize(w @ v, dim=0)  # ... then u; sigma = u^T W v with both new vectors
    expected = layer.parametrizations.weight.original / torch.dot(u, w @ v)
    assert torch.allclose(layer.weight, expected, atol=1e-6)
    assert torch.allclose(sn_state(layer).u, u, atol=1e-6) and torch.allclose(sn_state(layer).v, v, atol=1e-6)


def test_spectral_norm_eval_runs_no_power_iteration():
    torch.manual_seed(2)
    layer = spectral_norm(nn.Linear(10, 7))
    for _ in range(3):
        layer(torch.randn(4, 10))
    layer.eval()
    u, v = sn_state(layer).u.clone(), sn_state(layer).v.clone()
    out1 = layer(torch.randn(4, 10))
    w1 = layer.weight.detach().clone()
    layer(torch.randn(4, 10))
    assert torch.equal(sn_state(layer).u, u) and torch.equal(sn_state(layer).v, v)
    assert torch.equal(layer.weight, w1)
    w = layer.parametrizations.weight.original.detach()
    assert torch.allclose(w1, w / torch.dot(u, w @ v))
    assert out1.requires_grad  # gradients still flow to the raw weight
    layer.train()
    layer(torch.randn(4, 10))
    assert not torch.equal(sn_state(layer).u, u)


def test_spectral_norm_u_survives_state_dict_round_trip():
    torch.manual_seed(3)
    a = StandardCNNDiscriminator(image_size=32, channels=3, width=4, norm="spectral")
    for _ in range(5):
        a(torch.randn(2, 3, 32, 32))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    assert any(k.endswith("parametrizations.weight.0.u") for k in a.state_dict())
    torch.manual_seed(99)
    b = StandardCNNDiscriminator(image_size=32, channels=3, width=4, norm="spectral")
    us = lambda m: [s.u for s in m.modules() if isinstance(s, SpectralNorm)]  # noqa: E731
    assert not all(torch.equal(x, y) for x, y in zip(us(a), us(b)))
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    assert all(torch.equal(x, y) for x, y in zip(us(a), us(b)))
    a.eval(), b.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- comparators
def orthogonal(rows: int, cols: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols)))
    return q if rows >= cols else q.t()


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthonormal_regularizer_zero_iff_orthogonal(shape):
    torch.manual_seed(4)
    d = nn.Linear(shape[1], shape[0])
    with torch.no_grad():
        d.weight.copy_(orthogonal(*shape))
    module = nn.Module()
    module.discriminator = d
    reg = OrthonormalRegularizer(weight=2.0)
    assert float(reg(module, None, None).detach()) < 1e-10
    with torch.no_grad():
        d.weight.mul_(1.1)
    assert float(reg(module, None, None).detach()) > 1e-2
    with torch.no_grad():
        d.weight.copy_(torch.randn(*shape))
    value = reg(module, None, None)
    value.backward()
    assert float(value.detach()) > 1e-2 and d.weight.grad.abs().sum() > 0


def test_orthonormal_regularizer_rejects_negative_weight():
    with pytest.raises(ValueError, match="weight"):
        OrthonormalRegularizer(weight=-1.0)


def test_weight_norm_has_unit_rows_and_no_gain():
    layer = wrap(nn.Conv2d(3, 5, 3), "weight")
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(7.0)
    assert torch.allclose(layer.weight.flatten(1).norm(dim=1), torch.ones(5), atol=1e-6)
    assert {n for n, _ in layer.named_parameters()} == {"bias", "parametrizations.weight.original"}


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_shift_only_norms_remove_gamma(kind):
    torch.manual_seed(5)
    norm = ShiftOnlyNorm(kind, 4)
    assert [n for n, _ in norm.named_parameters()] == ["shift"]
    x = 3.0 + 5.0 * torch.randn(16, 4, 5, 5)
    y = norm(x)
    dims = (0, 2, 3) if kind == "batch" else (1, 2, 3)
    assert torch.allclose(y.mean(dim=dims), torch.zeros(1), atol=1e-5)
    assert torch.allclose(y.var(dim=dims, unbiased=False), torch.ones(1), atol=1e-3)
    assert norm(torch.randn(8, 4)).shape == (8, 4)
    with pytest.raises(ValueError, match="'batch' or 'layer'"):
        ShiftOnlyNorm("group", 4)


@pytest.mark.parametrize("norm", ["weight", "batch", "layer", "spectral"])
def test_norm_options_build_and_train(norm):
    torch.manual_seed(6)
    model = NSGAN(MLPGenerator(width=16, depth=1), MLPDiscriminator(width=16, depth=2, norm=norm))
    cnn = StandardCNNDiscriminator(image_size=32, channels=3, width=2, norm=norm)
    res = ResNetDiscriminator(image_size=32, channels=3, width=0.05, norm=norm)
    assert cnn(torch.randn(2, 3, 32, 32)).shape == (2,) and res(torch.randn(2, 3, 32, 32)).shape == (2,)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    real, fake = torch.randn(32, 2) + 2.0, torch.randn(32, 2)
    losses = []
    for _ in range(30):
        loss = model.objective.d_loss(model.discriminator(real), model.discriminator(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses


def test_unknown_norm_is_one_clear_error():
    with pytest.raises(ValueError, match="valid: none, spectral, weight, batch, layer"):
        MLPDiscriminator(norm="group")


# ----------------------------------------------------------------------------- gradient normalization
def piecewise_linear_d() -> nn.Module:
    torch.manual_seed(7)
    return MLPDiscriminator(in_dim=2, width=32, depth=3, slope=0.2).double()


def test_gn_output_bounded_on_random_inputs():
    torch.manual_seed(8)
    for d, x in [
        (piecewise_linear_d(), 5 * torch.randn(512, 2, dtype=torch.float64)),
        (StandardCNNDiscriminator(image_size=32, channels=3, width=4, norm="layer"), torch.randn(16, 3, 32, 32)),
    ]:
        out = gradient_normalize(d, x)
        assert out.shape == (len(x),)
        out = out.detach()
    assert bool((out.abs() <= 1.0).all()) and float(out.abs().max()) > 0.05


def activation_pattern(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Signs of every LeakyReLU input: equal patterns = the same linear region of D."""
    signs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, a: signs.append(a[0] > 0)) for m in d.modules()
             if isinstance(m, nn.LeakyReLU)]
    with torch.no_grad():
        d(x)
    for h in hooks:
        h.remove()
    return torch.cat(signs, dim=1)


def test_gn_gradient_norm_and_finite_differences_at_most_one():
    """Wu et al. 2021: D^ is piecewise 1-Lipschitz for a piecewise-linear D. Within a linear region both
    the autograd gradient and finite differences stay <= 1. Across a region boundary ||grad D|| jumps,
    so D^ itself jumps: the bound is piecewise, not global (pairs straddling a boundary show it)."""
    d = piecewise_linear_d()
    torch.manual_seed(9)
    x = (3 * torch.randn(2000, 2, dtype=torch.float64)).requires_grad_(True)
    (g,) = torch.autograd.grad(gradient_normalize(d, x).sum(), x)
    norms = g.norm(dim=1)
    assert float(norms.max()) <= 1 + 1e-4 and float(norms.max()) > 0.1
    x0 = x.detach()
    x1 = x0 + 1e-4 * torch.randn_like(x0)
    ratio = (gradient_normalize(d, x0) - gradient_normalize(d, x1)).abs().detach() / (x0 - x1).norm(dim=1)
    same = (activation_pattern(d, x0) == activation_pattern(d, x1)).all(dim=1)
    assert int(same.sum()) > 1500 and int((~same).sum()) > 0
    assert float(ratio[same].max()) <= 1 + 1e-3 and float(ratio[same].max()) > 0.05
    assert float(ratio[~same].max()) > 1.5  # the piecewise nature: a jump at a region boundary


def test_gn_differentiates_through_the_gradient_norm():
    """For D(x) = a.x + b, D^ = (a.x + b) / (||a|| + |a.x + b|): D's parameter gradients through
    ``gradient_normalize`` must equal those of this closed form (they differ if the norm were detached)."""
    torch.manual_seed(10)
    d = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    gradient_normalize(d, x).pow(2).sum().backward()
    a, b = d[0].weight, d[0].bias
    got = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    f = x @ a.squeeze(0) + b
    (f / (a.norm() + f.abs())).pow(2).sum().backward()
    assert torch.allclose(got[0], a.grad) and torch.allclose(got[1], b.grad)
    a.grad = b.grad = None
    f = x @ a.squeeze(0) + b
    (f / (a.norm().detach() + f.abs())).pow(2).sum().backward()
    assert not torch.allclose(got[0], a.grad)


def test_gngan_uses_gn_in_both_steps():
    torch.manual_seed(11)
    g, d = MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1)
    model = GNGAN(g, d, loss="bounded_bce")
    fake = g(torch.randn(5, 2))
    out = model.discriminate(fake)  # G step: fake carries G's graph
    assert out.requires_grad and bool((out.abs() <= 1).all())
    model.objective.g_loss(out).backward()
    assert all(p.grad is not None for p in g.parameters())
    real = torch.randn(5, 2)
    assert torch.allclose(model.discriminate(real), gradient_normalize(d, real))
    assert not real.requires_grad  # the caller's tensor is not modified


@pytest.mark.parametrize("norm, word", [("batch", "batch norm"), ("spectral", "spectral norm")])
def test_gngan_refuses_batch_and_spectral_norm(norm, word):
    with pytest.raises(ValueError, match=f"model.discriminator.*{word}.*valid|model.discriminator.*{word}"):
        GNGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1, norm=norm))


def test_sngan_refuses_batch_norm_and_adds_sn():
    with pytest.raises(ValueError, match="batch norm"):
        SNGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1, norm="batch"))
    with pytest.raises(ValueError, match="norm: spectral"):
        SNGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1, norm="weight"))
    model = SNGAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=2))
    assert sum(isinstance(m, SpectralNorm) for m in model.discriminator.modules()) == 3
    assert model.hparams.loss == "hinge"


def test_bounded_bce_reads_output_as_probability():
    obj = objective("bounded_bce")
    real, fake = torch.tensor([0.6, -0.2]), torch.tensor([-0.5, 0.0])
    p_r, p_f = (real + 1) / 2, (fake + 1) / 2
    assert torch.allclose(obj.d_loss(real, fake), -(p_r.log().mean() + (1 - p_f).log().mean()))
    assert torch.allclose(obj.g_loss(fake), -p_f.log().mean())
    assert torch.isfinite(obj.d_loss(torch.ones(2), -torch.ones(2)))


# ----------------------------------------------------------------------------- conv operator norm
def dense_matrix(conv: nn.Conv2d, shape: tuple[int, int, int]) -> torch.Tensor:
    n = shape[0] * shape[1] * shape[2]
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return F.conv2d(basis, conv.weight, None, conv.stride, conv.padding).flatten(1).t()


@pytest.mark.parametrize("k, s, p, size", [(3, 1, 1, 6), (4, 2, 1, 7), (3, 2, 1, 6), (1, 1, 0, 5)])
def test_conv_operator_norm_matches_dense_matrix(k, s, p, size):
    torch.manual_seed(12)
    conv = nn.Conv2d(2, 3, k, s, p).double()
    shape = (2, size, size)
    a = dense_matrix(conv, shape)
    x = torch.randn(1, *shape, dtype=torch.float64)
    y = torch.randn_like(conv(x))
    adj = conv_adjoint(conv, y, shape[1:])
    assert torch.allclose((F.conv2d(x, conv.weight, None, s, p) * y).sum(), (x * adj).sum())  # <Ax, y> = <x, A^T y>
    true = float(torch.linalg.matrix_norm(a, 2))
    assert conv_operator_norm(conv, shape, iters=500) == pytest.approx(true, rel=1e-3)  # power iteration: from below
    if k == 1:
        assert true == pytest.approx(sigma(conv.weight), rel=1e-6)
    if s == 1:  # Tsuzuku et al. 2018: ||conv|| <= sqrt(kh kw) sigma(W)
        assert true <= k * sigma(conv.weight) + 1e-9


def test_conv_operator_norms_report_every_conv_of_an_sn_discriminator():
    torch.manual_seed(13)
    d = StandardCNNDiscriminator(image_size=16, channels=3, width=4, norm="spectral")
    x = torch.randn(4, 3, 16, 16)
    for _ in range(40):
        d(x)
    sns = [m for m in d.modules() if isinstance(m, SpectralNorm)]
    us = [m.u.clone() for m in sns]
    rows = conv_operator_norms(d, x, iters=100)
    assert all(torch.equal(u, m.u) for u, m in zip(us, sns))  # the diagnostic changes no SN state
    assert len(rows) == 7 and d.training
    assert rows[0].input_shape == (3, 16, 16) and rows[1].input_shape == (4, 16, 16)
    for r in rows:
        assert r.kernel_sigma == pytest.approx(1.0, abs=0.02)
        assert 0.0 < r.operator_norm and r.operator_norm != pytest.approx(r.kernel_sigma, rel=1e-3)


# ----------------------------------------------------------------------------- configs train
@pytest.mark.parametrize("variant", ["sngan", "gngan"])
def test_ring8_config_trains_and_checkpoint_round_trips(variant, run_dir):
    cli, before = train_from_config(f"configs/ring8/{variant}.yaml")
    check_trained(cli, before)
    path = run_dir / "last.ckpt"
    cli.trainer.save_checkpoint(path)
    config = str(REPO_ROOT / f"configs/ring8/{variant}.yaml")
    fresh = ReproCLI(args=["--config", config, "--seed_everything", "5"]).model
    fresh.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    sns = [(m, f) for m, f in zip(cli.model.modules(), fresh.modules()) if isinstance(m, SpectralNorm)]
    assert len(sns) == (4 if variant == "sngan" else 0)  # SN-GAN: 3 hidden layers + head
    assert all(torch.equal(m.u, f.u) and torch.equal(m.v, f.v) for m, f in sns)  # u is in the checkpoint
    cli.model.eval(), fresh.eval()
    x = torch.randn(64, 2)
    assert torch.equal(cli.model.discriminate(x), fresh.discriminate(x))


@pytest.mark.parametrize("variant", ["sngan", "gngan"])
def test_mnist_subset_config_trains(variant, run_dir, mnist_root):
    cli, before = train_from_config(
        f"configs/mnist/{variant}.yaml", "--data.data_root", str(mnist_root), "--data.num_samples", "512",
        "--data.batch_size", "8",
    )
    check_trained(cli, before)

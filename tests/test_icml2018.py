"""ICML 2018 variants: TAN (lens), RFGAN (representative features), Jacobian clamping (issue 4)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from repro.cli import main
from repro.fit import REPO_ROOT, ReproCLI
from repro.nets.autoencoder import ConvAutoencoder, MLPAutoencoder
from repro.nets.lens import ConvLens, MLPLens
from repro.nets.mlp import MLPDiscriminator, MLPGenerator
from repro.regularizers import GradientPenalty, JacobianClamping
from repro.variants import JCGAN, NSGAN, TAN, WGANGP, JacobianClamped, RFGAN
from repro.variants.rfgan import MissingPretrainedWeights
from repro.variants.tan import tan_lambda

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.log_every_n_steps", "5"]


def make_cli(config: str, *extra: str, steps: int = 20) -> ReproCLI:
    return ReproCLI(args=["--config", str(REPO_ROOT / config), "--trainer.max_steps", str(steps), *FAST, *extra])


def fit_and_check(cli: ReproCLI, steps: int = 20) -> None:
    before = {k: v.clone() for k, v in cli.model.generator.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == steps
    assert all(torch.isfinite(v) for v in cli.model._last.values())
    after = cli.model.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].dtype.is_floating_point)


def mnist_args(root: Path) -> list[str]:
    return ["--data.data_root", str(root), "--data.num_samples", "64", "--data.batch_size", "4"]


# ----------------------------------------------------------------------------- TAN
def test_tan_lambda_schedule():
    k = 1000
    assert tan_lambda(0, k) == 1.0
    assert tan_lambda(k // 2, k) == pytest.approx(1 - math.sin(math.pi / 4), abs=1e-12)
    assert tan_lambda(k, k) == pytest.approx(0.0, abs=1e-12)
    assert tan_lambda(k + 1, k) == 0.0 and tan_lambda(10 * k, k) == 0.0
    values = [tan_lambda(t, k) for t in range(0, k + 1, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing on [0, K]
    with pytest.raises(ValueError, match="temper_steps"):
        tan_lambda(0, 0)


@pytest.mark.parametrize("lens, shape", [(MLPLens(2), (64, 2)), (ConvLens(1, 8, 2), (4, 1, 28, 28))])
def test_identity_lens_has_zero_reconstruction_loss(lens, shape):
    x = torch.randn(shape)
    model = TAN(MLPGenerator(), MLPDiscriminator(), lens)
    if len(shape) > 2:  # any D works for the reconstruction term; use a flat one over the image
        model.discriminator = nn.Sequential(nn.Flatten(), nn.Linear(784, 1), nn.Flatten(0))
    adv, recon = model.lens_losses(x, torch.randn(shape))
    assert torch.equal(lens(x), x)
    assert recon.item() == 0.0
    assert torch.isfinite(adv)


def test_lens_adversarial_term_moves_only_the_lens():
    torch.manual_seed(0)
    model = TAN(MLPGenerator(), MLPDiscriminator(), MLPLens(2, identity_init=True))
    adv, recon = model.lens_losses(torch.randn(32, 2), torch.randn(32, 2))
    adv.backward()
    lens_grads = [p.grad for p in model.lens.parameters()]
    assert lens_grads[-1] is not None and lens_grads[-1].abs().sum() > 0  # reaches the (zero-init) output layer
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())  # D restored afterwards


def test_tan_trains_d_sees_lens_output_and_lambda0_step_reconstructs(run_dir):
    k = 5
    cli = make_cli("configs/ring8/tan.yaml", "--model.init_args.temper_steps", str(k),
                   "--model.init_args.lens.init_args.identity_init", "false")
    model = cli.model
    lens_out: list[torch.Tensor] = []
    d_in: list[torch.Tensor] = []
    model.lens.register_forward_hook(lambda m, i, o: lens_out.append(o))
    model.discriminator.register_forward_pre_hook(lambda m, i: d_in.append(i[0]))
    reals: list[tuple[torch.Tensor, int]] = []  # (real batch, index of D's next input)
    orig = model.real_input
    model.real_input = lambda x: (reals.append((x, len(d_in))), orig(x))[1]  # type: ignore[method-assign]
    fit_and_check(cli)
    # steps t = 0..K use the lens: one call for D's real input, one for the lens update, per D step
    assert len(lens_out) == 2 * (k + 1) * model.n_dis
    assert len(reals) == 20 * model.n_dis
    for t, (x, i) in enumerate(reals):
        if t <= k:  # D's input for the real batch is L(x) (the lens output of this step), not x
            assert d_in[i] is lens_out[2 * t] and not torch.equal(d_in[i], x)
        else:  # the lens is removed after K steps
            assert d_in[i] is x
    # a lens step with lambda = 0 (pure reconstruction) does not increase ||x - L(x)||^2
    real, fake = cli.datamodule.real_batch(256), model.sample(256)
    for _ in range(3):
        before = model.lens_losses(real, fake)[1].item()
        assert model.lens_step(real, fake, lam=0.0).item() == pytest.approx(before)
        after = model.lens_losses(real, fake)[1].item()
        assert after <= before and before > 0

def test_tan_mnist_subset(run_dir, mnist_root):
    fit_and_check(make_cli("configs/mnist/tan.yaml", *mnist_args(mnist_root)))


# ----------------------------------------------------------------------------- RFGAN
def rfgan_cli(config: str, cache: Path, *extra: str, steps: int = 20) -> ReproCLI:
    return make_cli(config, "--model.init_args.ae_cache_dir", str(cache), "--model.init_args.ae_steps", "30",
                    *extra, steps=steps)


def test_rfgan_fit_prepares_missing_weights_and_says_so(run_dir, capsys):
    """`repro fit` runs the preparation hook when its cached result is missing, and says so on stderr."""
    cache = run_dir / "cache"
    main(["fit", "--config", "configs/ring8/rfgan.yaml", "--model.init_args.ae_cache_dir", str(cache),
          "--model.init_args.ae_steps", "5", "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err
    assert "no pre-trained autoencoder" in err and "preparing it now" in err and "repro prepare" in err
    assert len(list(cache.glob("ring8-*.pt"))) == 1


def test_rfgan_module_without_preparation_refuses_to_train(run_dir):
    cli = rfgan_cli("configs/ring8/rfgan.yaml", run_dir / "none", steps=2)
    with pytest.raises(MissingPretrainedWeights, match="repro prepare"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)


def test_rfgan_pretrain_then_train_keeps_encoder_frozen(run_dir, capsys):
    cache = run_dir / "cache"
    args = ["--config", "configs/ring8/rfgan.yaml", "--model.init_args.ae_cache_dir", str(cache),
            "--model.init_args.ae_steps", "30"]
    main(["prepare", *args])
    path = Path(capsys.readouterr().out.strip().split(": ", 1)[1])
    assert path.parent == cache and path.name.startswith("ring8-")
    cached = torch.load(path)["state_dict"]
    # a different AE config or data set gives a different cache file
    other = rfgan_cli("configs/ring8/rfgan.yaml", cache, "--model.init_args.autoencoder.init_args.code_dim", "4")
    assert other.model.ae_cache_path(other.datamodule) != path

    cli = rfgan_cli("configs/ring8/rfgan.yaml", cache)
    model = cli.model
    fit_and_check(cli)
    for k, v in model.autoencoder.state_dict().items():
        assert torch.equal(v, cached[k]), k  # bit-identical to the pre-trained weights after 20 GAN steps
    assert all(not p.requires_grad and p.grad is None for p in model.encoder.parameters())
    d = model.discriminator
    assert d.head.in_features == d.body.feature_dim + model.autoencoder.code_dim == 128 + 8
    assert not any(p is q for p in model.encoder.parameters() for q in d.parameters())


def test_rfgan_gan_loss_moves_d_layers_not_encoder():
    torch.manual_seed(0)
    ae = MLPAutoencoder(2, 16, 2, 4)
    model = RFGAN(MLPGenerator(), MLPDiscriminator(width=32), ae)
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    loss = model.objective.d_loss(model.discriminate(real), model.discriminate(fake))
    loss.backward()
    body = list(model.discriminator.body.parameters())
    assert body and all(p.grad is not None and p.grad.abs().sum() > 0 for p in body)
    assert model.discriminator.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ae.parameters())
    # the classifier really uses E's features: changing h1 changes D's output
    before = model.discriminate(real).detach()
    with torch.no_grad():
        ae.encoder[-1].bias.add_(1.0)
    assert not torch.allclose(model.discriminate(real), before)


def test_rfgan_mnist_subset(run_dir, mnist_root):
    cache = run_dir / "cache"
    cli = rfgan_cli("configs/mnist/rfgan.yaml", cache, *mnist_args(mnist_root))
    assert isinstance(cli.model.autoencoder, ConvAutoencoder)
    cli.model.prepare(cli.datamodule)
    fit_and_check(cli)


# ----------------------------------------------------------------------------- Jacobian clamping
class LinearG(nn.Module):
    """G(z) = s * A z with A (x_dim x z_dim) having orthonormal columns."""

    def __init__(self, s: float, z_dim: int = 4, x_dim: int = 10):
        super().__init__()
        self.z_dim = z_dim
        self.a = torch.linalg.qr(torch.randn(x_dim, z_dim, generator=torch.Generator().manual_seed(1)))[0]
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.s * z @ self.a.t()


@pytest.mark.parametrize("s", [0.25, 1.0, 7.0, 20.0, 23.0])
def test_jacobian_clamping_on_linear_generator(s):
    g = LinearG(s)
    module = NSGAN(g, MLPDiscriminator(in_dim=10, width=8, depth=1))
    reg = JacobianClamping()  # paper defaults: lambda_min 1, lambda_max 20, eps 1
    z = torch.randn(64, 4)
    fake = g(z)
    assert torch.allclose(reg.ratio(g, z, fake), torch.full((64,), s), rtol=1e-5)
    penalty = reg(module, z, fake)
    expected = (s - 20.0) ** 2 if s > 20 else (1.0 - s) ** 2 if s < 1 else 0.0
    assert penalty.item() == pytest.approx(expected, rel=1e-4, abs=1e-8)
    penalty.backward()
    expected_grad = 2 * (s - 20.0) if s > 20 else 2 * (s - 1.0) if s < 1 else 0.0
    assert g.s.grad.item() == pytest.approx(expected_grad, rel=1e-3, abs=1e-4)


def test_jacobian_clamping_is_added_to_g_loss_in_the_loop(run_dir):
    """The term must reach G's update (a public script computes it and never adds it)."""
    results = {}
    for weight in ("0.0", "1.0"):
        cli = make_cli("configs/ring8/jcgan.yaml", "--model.init_args.g_regularizers",
                       '[{"class_path": "repro.regularizers.JacobianClamping", '
                       f'"init_args": {{"lambda_min": 50.0, "lambda_max": 60.0, "weight": {weight}}}}}]',
                       "--seed_everything", "3", steps=1)
        assert isinstance(cli.model.g_regularizers[0], JacobianClamping)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        params = [p.detach().clone() for p in cli.model.generator.parameters()]
        results[weight] = (cli.model._last["g_loss"].item(), params)
    # Q on ring8 is far below lambda_min = 50, so the penalty (Q - 50)^2 is > 1000 and must be in G's loss
    assert results["1.0"][0] - results["0.0"][0] > 1000
    assert any(not torch.equal(a, b) for a, b in zip(results["1.0"][1], results["0.0"][1]))


def test_jacobian_clamped_wraps_any_variant():
    clamped = JacobianClamped(WGANGP)
    assert clamped.__name__ == "JacobianClampedWGANGP" and issubclass(clamped, WGANGP)
    model = clamped(MLPGenerator(), MLPDiscriminator(), lambda_max=5.0, clamp_eps=0.5)
    assert isinstance(model.d_regularizers[0], GradientPenalty)
    (jc,) = model.g_regularizers
    assert isinstance(jc, JacobianClamping) and jc.lambda_max == 5.0 and jc.eps == 0.5
    assert isinstance(JCGAN(MLPGenerator(), MLPDiscriminator()).g_regularizers[0], JacobianClamping)
    with pytest.raises(ValueError, match="lambda_min"):
        JacobianClamping(lambda_min=3.0, lambda_max=2.0)


def test_jcgan_ring8(run_dir):
    fit_and_check(make_cli("configs/ring8/jcgan.yaml"))


def test_jcgan_mnist_subset(run_dir, mnist_root):
    fit_and_check(make_cli("configs/mnist/jcgan.yaml", *mnist_args(mnist_root)))


def test_prepare_without_a_preparation_step_does_nothing(run_dir, capsys):
    main(["prepare", "--config", "configs/ring8/nsgan.yaml"])
    assert "no preparation step" in capsys.readouterr().out
    assert not list(run_dir.iterdir())  # nothing trained, nothing cached

"""DCGAN nets (Radford et al. 2016) and SAGAN (Zhang et al. 2019): the self-attention block against its formula, its
placement in every net, the DCGAN nets' shapes and BN placement, spectral norm in SAGAN's G (transposed convs too),
and the CIFAR-10 GPU configs with the catalogue table that resolves them like ``repro reproduce --dry-run``."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import fake_native_images, load_config
from torch import nn

from repro import REPO_ROOT
from repro.nets import (
    DCGANDiscriminator, DCGANGenerator, ResNetDiscriminator, ResNetGenerator, SelfAttention, StandardCNNDiscriminator,
    StandardCNNGenerator,
)
from repro.normalization import SpectralNorm, TransposedSpectralNorm, spectral_norm
from repro.variants import NSGAN, SAGAN


def _attention(c: int = 16, seed: int = 0) -> SelfAttention:
    torch.manual_seed(seed)
    return SelfAttention(c)


def test_attention_is_identity_at_sigma_zero() -> None:
    block, x = _attention(), torch.randn(3, 16, 8, 6)
    assert block.sigma.item() == 0.0  # initialised to 0 (eq. 3)
    assert torch.equal(block(x), x)


def test_attention_rows_sum_to_one() -> None:
    beta = _attention().attention_map(torch.randn(2, 16, 8, 8))
    assert beta.shape == (2, 64, 16)  # HW queries x HW/4 pooled keys
    assert torch.allclose(beta.sum(-1), torch.ones(2, 64), atol=1e-6) and (beta >= 0).all()


def test_attention_equals_the_formula_by_einsum() -> None:
    """y = x + sigma * W_o (g beta^T), beta = softmax(theta^T phi), written per position with einsum on the 1x1 weights."""
    block, x = _attention(seed=1), torch.randn(2, 16, 4, 6, dtype=torch.float64)
    block = block.double()
    with torch.no_grad():
        block.sigma.fill_(0.7)
    w = {k: getattr(block, k).weight[:, :, 0, 0] for k in ("theta", "phi", "g", "o")}
    pool = lambda t: F.max_pool2d(t, 2)  # noqa: E731
    theta = torch.einsum("kc,nchw->nkhw", w["theta"], x).flatten(2)
    phi = pool(torch.einsum("kc,nchw->nkhw", w["phi"], x)).flatten(2)
    g = pool(torch.einsum("kc,nchw->nkhw", w["g"], x)).flatten(2)
    logits = torch.einsum("nki,nkj->nij", theta, phi)
    beta = logits.exp() / logits.exp().sum(-1, keepdim=True)
    attended = torch.einsum("ncj,nij->nci", g, beta)
    expected = x + 0.7 * torch.einsum("dc,nci->ndi", w["o"], attended).view_as(x)
    assert torch.allclose(block(x), expected, atol=1e-10)


def test_attention_in_channels_last_equals_the_contiguous_run() -> None:
    """``model.init_args.channels_last``: the block's 1x1 weights and its input in NHWC give the NCHW output and
    gradients (float64: equal up to summation order)."""
    plain, x = _attention(seed=2).double(), torch.randn(2, 16, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        plain.sigma.fill_(0.7)
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    assert nhwc.theta.weight.is_contiguous(memory_format=torch.channels_last)
    results = []
    for block, inp in ((plain, x), (nhwc, x.to(memory_format=torch.channels_last))):
        inp = inp.detach().requires_grad_(True)
        out = block(inp)
        grads = torch.autograd.grad(out.square().sum(), [inp, *block.parameters()])
        results.append((out, *grads))
    assert not results[1][1].is_contiguous()  # the input gradient came back in NHWC: the layout was exercised
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_sagan_step_in_channels_last_equals_the_contiguous_run() -> None:
    """SAGAN's G and D (self-attention at 14 px, spectral norm) on an MNIST-sized batch with ``channels_last``:
    G's and D's outputs, D's loss gradients and G's loss gradients equal the contiguous model's (float64), and
    the outputs agree to 1e-5 in float32."""
    def nets() -> tuple[nn.Module, nn.Module]:
        return (StandardCNNGenerator(z_dim=16, image_size=28, channels=1, width=8, attention_at=14),
                StandardCNNDiscriminator(image_size=28, channels=1, width=8, attention_at=14))

    torch.manual_seed(0)
    state = SAGAN(*nets()).state_dict()
    for key in state:
        if key.endswith("sigma"):
            state[key] = torch.full_like(state[key], 0.5)  # the attention output takes part (it starts at 0)
    gen = torch.Generator().manual_seed(1)
    real, z = torch.rand(4, 1, 28, 28, generator=gen) * 2 - 1, torch.randn(4, 16, generator=gen)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        runs = []
        for channels_last in (False, True):
            model = SAGAN(*nets(), channels_last=channels_last)
            model.load_state_dict(state)
            model.to(dtype)
            layouts = []  # whether each attention block's input is NHWC (and not also NCHW-contiguous)
            for block in (m for m in model.modules() if isinstance(m, SelfAttention)):
                block.register_forward_pre_hook(lambda _, a: layouts.append(
                    a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous()))
            x, w = real.to(dtype), z.to(dtype)
            fake = model.generator(w)
            d_out = model.discriminator(x)
            model.discriminator_loss(x, fake.detach()).backward()
            d_grads = [p.grad.clone() for p in model.discriminator.parameters()]
            model.generator_loss(x, w, fake).backward()
            runs.append((fake, d_out, d_grads, [p.grad for p in model.generator.parameters()]))
            assert len(layouts) >= 2 and set(layouts) == {channels_last}
        (fake_a, d_a, dg_a, gg_a), (fake_b, d_b, dg_b, gg_b) = runs
        assert (fake_a - fake_b).abs().max() <= tol * fake_a.abs().max()
        assert (d_a - d_b).abs().max() <= tol * d_a.abs().max()
        if dtype == torch.float64:  # float32 gradients through ReLUs may differ where rounding flips a unit
            for a, b in zip([*dg_a, *gg_a], [*dg_b, *gg_b]):
                assert (a - b).abs().max() <= tol * max(a.abs().max().item(), 1e-3), tuple(a.shape)


@pytest.mark.parametrize("make, x_shape, sizes", [
    (lambda at: StandardCNNGenerator(z_dim=8, image_size=32, width=8, attention_at=at), (8,), [4, 8, 16, 32]),
    (lambda at: StandardCNNDiscriminator(image_size=32, width=8, attention_at=at), (3, 32, 32), [32, 16, 8, 4]),
    (lambda at: ResNetGenerator(z_dim=8, width=0.125, attention_at=at), (8,), [4, 8, 16, 32]),
    (lambda at: ResNetDiscriminator(width=0.125, attention_at=at), (3, 32, 32), [16, 8]),
    (lambda at: DCGANGenerator(z_dim=8, image_size=64, width=8, attention_at=at), (8,), [4, 8, 16, 32]),
    (lambda at: DCGANDiscriminator(image_size=64, width=8, attention_at=at), (3, 64, 64), [32, 16, 8, 4]),
], ids=["cnn-g", "cnn-d", "resnet-g", "resnet-d", "dcgan-g", "dcgan-d"])
def test_attention_placement_shapes(make, x_shape, sizes) -> None:
    """One block at each valid resolution, seeing a feature map of that size; the net's output shape is unchanged."""
    x = torch.randn(2, *x_shape)
    plain_shape = make(None)(x).shape
    for size in sizes:
        net = make(size)
        (block,) = [m for m in net.modules() if isinstance(m, SelfAttention)]
        seen: list[torch.Size] = []
        block.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        with torch.no_grad():  # sigma != 0: the block is not a no-op
            block.sigma.fill_(1.0)
        assert net(x).shape == plain_shape
        assert seen[0][1:] == (block.channels, size, size)


def test_attention_at_a_missing_resolution_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"attention_at 12 is not a feature-map resolution.*valid: 4, 8, 16, 32"):
        ResNetGenerator(width=0.125, attention_at=12)
    with pytest.raises(ValueError, match="attention_at 7 .* valid: 14, 28"):  # 7 px cannot be max-pooled 2x2
        StandardCNNGenerator(image_size=28, width=8, attention_at=7)
    with pytest.raises(ValueError, match="multiple of 8 channels"):
        SelfAttention(4)


@pytest.mark.parametrize("size, bottom", [(28, 7), (32, 4), (64, 4)])
def test_dcgan_shapes_and_bn_placement(size: int, bottom: int) -> None:
    g, d = DCGANGenerator(z_dim=100, image_size=size, channels=1, width=8), DCGANDiscriminator(size, 1, width=8)
    x = g(torch.randn(4, 100))
    assert x.shape == (4, 1, size, size) and x.abs().max() <= 1 and d(x).shape == (4,)
    # G: BN after every (transposed) conv but the output one, then tanh; D: BN after every conv but the input one
    g_layers, d_layers = list(g.net), list(d.body)
    g_convs = [i for i, m in enumerate(g_layers) if isinstance(m, nn.ConvTranspose2d)]
    assert [isinstance(g_layers[i + 1], nn.BatchNorm2d) for i in g_convs] == [True] * (len(g_convs) - 1) + [False]
    assert isinstance(g_layers[-1], nn.Tanh) and g_layers[0].kernel_size == (bottom, bottom)
    d_convs = [i for i, m in enumerate(d_layers) if isinstance(m, nn.Conv2d)]
    assert [isinstance(d_layers[i + 1], nn.BatchNorm2d) for i in d_convs] == [False] + [True] * (len(d_convs) - 1)
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.ReLU) for m in g_layers) == len(g_convs) - 1
    assert d.feature_dim == 8 * 2 ** (len(d_convs) - 1) * bottom * bottom
    with pytest.raises(ValueError, match="4-7 px bottom"):
        DCGANGenerator(image_size=100)


def test_transposed_spectral_norm_divides_by_the_conv_operator_matrix_norm() -> None:
    """sigma of a transposed conv's weight (in, out, k, k) is taken of the (out, in*k*k) matrix (power iteration
    converged), and the parametrized weight keeps its layout."""
    torch.manual_seed(0)
    layer = spectral_norm(nn.ConvTranspose2d(6, 4, 3))
    assert isinstance(layer.parametrizations.weight[0], TransposedSpectralNorm)
    raw = layer.parametrizations.weight.original
    for _ in range(200):
        w = layer.weight
    sigma = torch.linalg.matrix_norm(raw.transpose(0, 1).flatten(1), ord=2)
    assert w.shape == raw.shape and torch.allclose(w, raw / sigma, rtol=1e-4)


def test_sagan_normalizes_every_g_and_d_layer_and_keeps_g_bn() -> None:
    g = StandardCNNGenerator(z_dim=8, image_size=28, channels=1, width=8, attention_at=14)
    d = DCGANDiscriminator(image_size=28, channels=1, width=8, batch_norm=False, attention_at=14)
    model = SAGAN(g, d)
    for net in (model.generator, model.discriminator):
        layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
        assert layers and all(isinstance(m.parametrizations.weight[0], SpectralNorm) for m in layers)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())
    hp = model.hparams
    assert (hp.loss, hp.n_dis, hp.lr_g, hp.lr_d, tuple(hp.betas_g), tuple(hp.betas_d)) == (
        "hinge", 1, 1e-4, 4e-4, (0.0, 0.9), (0.0, 0.9))
    with pytest.raises(ValueError, match="SAGAN's discriminator has no batch norm"):
        SAGAN(StandardCNNGenerator(z_dim=8, image_size=28, channels=1, width=8), DCGANDiscriminator(28, 1, width=8))


# ----------------------------------------------------------------- the GPU configs and their table
GPU_CONFIGS = sorted(str(p.relative_to(REPO_ROOT)) for folder in ("dcgan", "sagan", "s3gan")
                     for p in (REPO_ROOT / "configs" / folder).glob("*.yaml"))


@pytest.fixture()
def cifar(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand-in CIFAR-10 training images; the evaluation preflight (which would load the Inception weights and the
    test split, absent here) records the settings it receives instead."""
    import repro.preflight as preflight

    fake_native_images(monkeypatch, {"cifar10": (3, 32)})
    seen: list = []
    monkeypatch.setattr(preflight, "check_evaluation", lambda evaluation, datamodule: seen.append(evaluation.settings))
    return seen


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_gpu_config_states_its_target_and_parses(config, run_dir, cifar):
    header = "\n".join(line for line in (REPO_ROOT / config).read_text().splitlines() if line.startswith("#"))
    assert "FID" in header and ("Aim:" in header or "Published number: none" in header)
    cli = load_config(config)
    assert cli.datamodule.dataset == "cifar10" and cli.trainer.max_steps in (100_000, 200_000)
    (settings,) = cifar
    assert (settings.n_fid, settings.n_is) == (10_000, 10_000)
    assert settings.reference_split == ("train" if "mimicry" in config else "test")


def test_dcgan_and_sagan_gpu_settings(run_dir, cifar):
    dcgan = load_config("configs/dcgan/cifar10.yaml").model
    assert type(dcgan) is NSGAN and isinstance(dcgan.generator, DCGANGenerator) and dcgan.z_dim == 100
    assert (dcgan.hparams.lr_g, dcgan.hparams.lr_d, tuple(dcgan.hparams.betas_d)) == (2e-4, 2e-4, (0.5, 0.999))
    studio = load_config("configs/dcgan/cifar10_studiogan.yaml")
    assert (studio.model.hparams.n_dis, studio.trainer.max_steps, studio.datamodule.batch_size) == (2, 200_000, 64)
    sagan = load_config("configs/sagan/cifar10.yaml").model
    assert type(sagan) is SAGAN and (sagan.hparams.lr_g, sagan.hparams.lr_d) == (1e-4, 4e-4)
    for net, channels in ((sagan.generator, 256), (sagan.discriminator, 128)):  # attention at 16 px in both
        (block,) = [m for m in net.modules() if isinstance(m, SelfAttention)]
        assert block.channels == channels and isinstance(block.theta.parametrizations.weight[0], SpectralNorm)


@pytest.mark.parametrize("config", ["configs/dcgan/cifar10.yaml", "configs/sagan/cifar10.yaml"])
def test_one_step_on_stand_in_images(config, run_dir, cifar):
    width = "0.125" if "sagan" in config else "8"
    cli = load_config(config, "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
                      "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--data.batch_size", "8",
                      "--evaluation.image_metrics", "false", "--evaluation.n_samples", "16",
                      "--model.init_args.generator.init_args.width", width,
                      "--model.init_args.discriminator.init_args.width", width)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1 and all(torch.isfinite(v) for v in cli.model._last.values())


def test_catalogue_table_resolves_like_dry_run(run_dir, cifar, capsys):
    """Every row parses as ``repro reproduce catalogue-cifar10 --dry-run`` checks it, and the dry run plans them all."""
    from repro.cli import main
    from repro.tables.plan import plan
    from repro.tables.runner import check_configs
    from repro.tables.spec import load_spec

    spec = load_spec(REPO_ROOT / "paper_tables" / "catalogue-cifar10.yaml")
    runs = plan(spec, seeds=[0])
    assert {r.row.id for r in runs} == {"dcgan", "dcgan-64", "dcgan-studiogan", "dcgan-mimicry", "sagan",
                                        "sngan-projection", "s3gan-10pct", "s3gan-20pct"}
    check_configs(spec, runs)
    main(["reproduce", str(spec.path), "--dry-run"])
    assert "24 to run" in capsys.readouterr().out


def test_conditional_sngan_projection_gpu_settings(run_dir, cifar):
    """The class-conditional SN-GAN row: projection D with SN (and SN on the embedding), conditional BN in G, hinge,
    Adam 2e-4 betas (0, 0.9), n_dis 5, 100K updates, 50K samples against the training set (MMagic's protocol)."""
    from repro.nets import ProjectionDiscriminator, ResNetGenerator

    cli = load_config("configs/sngan/cifar10_resnet_projection.yaml")
    model = cli.model
    assert model.num_classes == 10 and isinstance(model.generator, ResNetGenerator) and model.generator.num_classes == 10
    assert isinstance(model.discriminator, ProjectionDiscriminator) and model.discriminator.num_classes == 10
    assert isinstance(model.discriminator.embed.parametrizations.weight[0], SpectralNorm)
    assert any(isinstance(m, SpectralNorm) for m in model.discriminator.inner.modules())
    hp = model.hparams
    assert (hp.loss, hp.n_dis, hp.lr_g, hp.lr_d, tuple(hp.betas_g), tuple(hp.betas_d)) == (
        "hinge", 5, 2e-4, 2e-4, (0.0, 0.9), (0.0, 0.9))
    assert cli.trainer.max_steps == 100_000 and cli.datamodule.batch_size == 64
    (settings,) = cifar
    assert (settings.n_fid, settings.n_is, settings.reference_split) == (50_000, 50_000, "train")


@pytest.mark.parametrize("config, fraction", [("configs/s3gan/cifar10_10pct.yaml", 0.1),
                                              ("configs/s3gan/cifar10_20pct.yaml", 0.2)])
def test_s3gan_gpu_settings(config, fraction, run_dir, cifar):
    """S3GAN on the conditional SN-GAN ResNet: the labelled fraction, SN classifier and rotation heads, the rotation
    weights 1.0 / 0.2 and the projection row's optimizer."""
    from repro.nets import LabelPredictingDiscriminator
    from repro.variants import S3GAN
    from repro.variants.ssgan import RotationDiscriminator

    model = load_config(config).model
    assert type(model) is S3GAN and model.num_classes == 10 and model.labelled_fraction == fraction
    assert isinstance(model.discriminator, RotationDiscriminator)
    assert isinstance(model.predictor, LabelPredictingDiscriminator)
    for head in (model.predictor.classifier, model.discriminator.rotation_head):
        assert isinstance(head.parametrizations.weight[0], SpectralNorm)
    assert [r.weight for r in model.d_regularizers] == [1.0] and [r.weight for r in model.g_regularizers] == [0.2]
    hp = model.hparams
    assert (hp.loss, hp.n_dis, hp.lr_g, hp.lr_d, tuple(hp.betas_g), tuple(hp.betas_d)) == (
        "hinge", 5, 2e-4, 2e-4, (0.0, 0.9), (0.0, 0.9))

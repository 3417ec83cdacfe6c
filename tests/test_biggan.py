"""BigGAN-lite (Brock et al. 2019): the modified orthogonal regulariser and its gradient, truncated latents,
the EMA start step, hierarchical latents with the shared class embedding, the truncation sweep's columns."""
from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from repro import REPO_ROOT
from repro.latents import truncated_normal, truncation_suffix
from repro.metrics.registry import family_of_key
from repro.nets import BigGANGenerator, ProjectionDiscriminator, StandardCNNDiscriminator
from repro.nets.conditional_bn import ConditionalBatchNorm2d
from repro.regularizers import ModifiedOrthogonalRegularizer
from repro.variants import BigGAN


def _off_diagonal_squares(w: torch.Tensor) -> float:
    """sum_{i != j} <w_i, w_j>^2 over the rows of w (flattened), in float64 loops."""
    rows = w.detach().double().flatten(1)
    return sum(float(rows[i] @ rows[j]) ** 2 for i in range(len(rows)) for j in range(len(rows)) if i != j)


def _closed_form_gradient(w: torch.Tensor, beta: float) -> torch.Tensor:
    """d/dW beta ||W W^T * (1 - I)||_F^2 = 4 beta (W W^T * (1 - I)) W, row by row without autograd:
    row k gets 4 beta sum_{j != k} <w_k, w_j> w_j."""
    rows = w.detach().double().flatten(1)
    grad = torch.zeros_like(rows)
    for k in range(len(rows)):
        for j in range(len(rows)):
            if j != k:
                grad[k] += 4 * beta * float(rows[k] @ rows[j]) * rows[j]
    return grad.view(w.shape)


def test_ortho_penalty_is_zero_for_orthogonal_rows_of_any_norm():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    rows = q[:4] * torch.tensor([[0.5], [2.0], [3.0], [1.0]], dtype=torch.float64)  # orthogonal, not unit norm
    assert ModifiedOrthogonalRegularizer.penalty(rows).item() == pytest.approx(0.0, abs=1e-24)
    # the plain orthonormal term would not be zero here: only the off-diagonal of W W^T is penalized
    assert (rows @ rows.t() - torch.eye(4, dtype=torch.float64)).square().sum() > 1


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3)])
def test_ortho_penalty_and_gradient_match_the_formulas(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    beta = 1e-4
    value = beta * ModifiedOrthogonalRegularizer.penalty(w)
    assert value.item() == pytest.approx(beta * _off_diagonal_squares(w), rel=1e-10)
    (grad,) = torch.autograd.grad(value, w)
    assert torch.allclose(grad, _closed_form_gradient(w, beta), rtol=1e-10, atol=1e-16)


def test_ortho_regularizer_sums_over_gs_weights_except_the_shared_embedding():
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2, num_classes=10, shared_dim=8)
    d = ProjectionDiscriminator(StandardCNNDiscriminator(image_size=28, channels=1, width=4), num_classes=10)
    model = BigGAN(g, d, ortho_weight=1e-4, num_classes=10)
    (reg,) = model.g_regularizers
    names = [n for n, p in g.named_parameters() if p.dim() >= 2 and not n.startswith("shared.")]
    assert not any(w is g.shared.weight for w in reg.weights(g)) and len(reg.weights(g)) == len(names) > 10
    # raw (not spectrally normalized) weights: the parametrization's original tensor
    assert any(w is g.linear.parametrizations.weight.original for w in reg.weights(g))
    expected = 1e-4 * sum(_off_diagonal_squares(p) for n, p in g.named_parameters() if n in names)
    assert reg(model, torch.randn(2, 96), torch.randn(2, 1, 28, 28)).item() == pytest.approx(expected, rel=1e-5)
    assert BigGAN(g, d, num_classes=10).g_regularizers == []  # ortho_weight 0: off (BigGAN-PyTorch's CIFAR script)


def test_truncated_normal_never_exceeds_the_threshold_and_is_a_truncated_normal():
    gen = torch.Generator().manual_seed(0)
    for t in (0.25, 0.5, 1.0, 2.0):
        z = truncated_normal((4000, 8), t, generator=gen)
        assert z.abs().max() <= t and z.shape == (4000, 8)
    z = truncated_normal((20000,), 1.0, generator=torch.Generator().manual_seed(1)).double().numpy()
    assert stats.kstest(z, stats.truncnorm(-1.0, 1.0).cdf).pvalue > 0.01
    # the test can tell: a normal clipped to [-1, 1] (mass piled at the ends) is rejected
    clipped = torch.randn(20000, generator=torch.Generator().manual_seed(1)).clamp(-1, 1).double().numpy()
    assert stats.kstest(clipped, stats.truncnorm(-1.0, 1.0).cdf).pvalue < 1e-6
    with pytest.raises(ValueError, match="threshold must be > 0"):
        truncated_normal((2,), 0.0)


def test_model_draws_truncated_latents():
    model = _model()
    z = model.sample_z(512, truncation=0.3)
    assert z.shape == (512, model.z_dim) and z.abs().max() <= 0.3 and z.abs().max() > 0.25


def _model(**kwargs) -> BigGAN:
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2)
    return BigGAN(g, StandardCNNDiscriminator(image_size=28, channels=1, width=4), **kwargs)


def test_ema_copies_g_before_ema_start_then_averages(monkeypatch):
    model = _model(ema_decay=0.9, ema_start=3)
    for step in (1, 2, 3):
        monkeypatch.setattr(BigGAN, "global_step", property(lambda _, s=step: s))
        old = [p.clone() for p in model.generator_ema.parameters()]
        with torch.no_grad():
            for p in model.generator.parameters():
                p.add_(torch.randn_like(p))
        model.update_ema()
        for p_ema, p_old, p in zip(model.generator_ema.parameters(), old, model.generator.parameters()):
            if step < 3:  # BigGAN-PyTorch: decay 0 while itr < ema_start
                assert torch.equal(p_ema, p)
            else:
                assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p, atol=1e-6)
                assert not torch.equal(p_ema, p)
    with pytest.raises(ValueError, match="ema_start"):
        _model(ema_decay=0.9, ema_start=-1)


def test_hierarchical_latents_and_shared_embedding_reach_each_block():
    """z (96) is split into 3 chunks of 32: chunk 0 feeds the linear layer, chunk i the i-th up-block, whose
    two conditional BNs get c_i = [shared(y), z_i]; all blocks share one embedding table."""
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2, num_classes=10, shared_dim=8)
    seen: dict[str, torch.Tensor] = {}
    for name, m in g.named_modules():
        if isinstance(m, ConditionalBatchNorm2d):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[1]))
            assert m.gain.parametrizations.weight.original.shape == (8, 40)  # Linear(8 + 32 -> 8 channels)
    linear_in: list[torch.Tensor] = []
    g.linear.register_forward_hook(lambda mod, args, out: linear_in.append(args[0]))
    z, y = torch.randn(4, 96), torch.tensor([0, 3, 3, 9])
    assert g(z, y).shape == (4, 1, 28, 28)
    assert torch.equal(linear_in[0], z[:, :32])
    e = g.shared(y)
    for i in range(2):
        expected = torch.cat([e, z[:, 32 * (i + 1): 32 * (i + 2)]], 1)
        for bn in ("bn1", "bn2"):
            assert torch.equal(seen[f"blocks.{i}.{bn}"], expected), (i, bn)
    assert len(seen) == 4 and isinstance(g.shared, nn.Embedding)


def test_generator_refuses_bad_settings():
    with pytest.raises(ValueError, match="not a multiple of 3"):
        BigGANGenerator(z_dim=100, image_size=28, channels=1)
    with pytest.raises(ValueError, match="shared class embedding"):
        BigGANGenerator(num_classes=10, shared_dim=0, hierarchical=True)
    with pytest.raises(ValueError, match="needs num_classes"):
        BigGANGenerator(shared_dim=16)
    with pytest.raises(ValueError, match="image_size"):
        BigGANGenerator(image_size=64)
    g = BigGANGenerator(num_classes=10, shared_dim=0, hierarchical=False)
    with pytest.raises(ValueError, match="labels"):
        g(torch.randn(2, 128))


def test_truncated_metric_keys_belong_to_their_family():
    key = "fid10k_train_inception" + truncation_suffix(0.5)
    assert key == "fid10k_train_inception_trunc0.5" and truncation_suffix(1.0) == "_trunc1"
    assert family_of_key(key) is family_of_key("fid10k_train_inception") is not None
    assert family_of_key("modes_2500_trunc2").name == "toy_modes"


def test_twenty_cli_steps_on_labelled_mnist(run_dir, mnist_root):
    """configs/mnist/biggan.yaml through the CLI: 20 generator updates on a 1,024-image MNIST subset with labels
    (batches of 4), the EMA copying G until update 10 and averaging after; truncated samples at the final evaluation."""
    from repro.fit import ReproCLI

    cli = ReproCLI(args=["--config", str(REPO_ROOT / "configs/mnist/biggan.yaml"), "--data.data_root", str(mnist_root),
                         "--data.num_samples", "1024", "--data.batch_size", "4", "--trainer.max_steps", "20",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
                         "--model.init_args.ema_start", "10", "--evaluation.truncation", "[0.5]"])
    before = {k: v.clone() for k, v in cli.model.generator.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    model = cli.model
    assert cli.trainer.global_step == 20 and cli.datamodule.labelled and model.num_classes == 10
    assert all(torch.isfinite(v) for v in model.last_losses.values())
    after = model.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].dtype.is_floating_point)
    assert [type(r) for r in model.g_regularizers] == [ModifiedOrthogonalRegularizer]
    ema, g = dict(model.generator_ema.named_parameters()), dict(model.generator.named_parameters())
    assert not any(torch.equal(ema[k], g[k]) for k in g)  # averaging since update 10
    assert model.sample(4).shape == (4, 1, 28, 28)


def test_ensemble_is_refused_clearly(run_dir):
    from repro.errors import UserError
    from repro.fit import build_cli

    config = ["--config", str(REPO_ROOT / "configs/mnist/biggan.yaml"), "--ensemble", "2", "--trainer.logger", "false"]
    with pytest.raises(UserError, match="class-conditional training .*train its seeds separately"):
        build_cli(config)  # labels are refused first; the unconditional BigGAN's refusal: test_ensemble.py


@pytest.fixture()
def cifar_stand_in(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand-in CIFAR-10 (random images, random labels) and the evaluation settings the preflight receives
    (instead of loading the Inception weights)."""
    import repro.data.module as data_module
    import repro.preflight as preflight

    def fake(name: str, root: object, download: bool, image_size: int | None = None):
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (64,), generator=g))

    monkeypatch.setattr(data_module, "load_images", fake)
    seen: list = []
    monkeypatch.setattr(preflight, "check_evaluation", lambda evaluation, datamodule: seen.append(evaluation.settings))
    return seen


# config -> (shared_dim, hierarchical, ortho beta, init scheme): the CIFAR script has none of the paper's G changes
GPU = {"cifar10_script": (0, False, 0.0, "normal"), "cifar10_paper": (128, True, 1e-4, "orthogonal")}


@pytest.mark.parametrize("name", sorted(GPU))
def test_cifar10_configs_are_the_stated_settings(name, run_dir, cifar_stand_in):
    from conftest import load_config

    from repro.normalization import SpectralNorm

    shared, hierarchical, beta, scheme = GPU[name]
    cli = load_config(f"configs/biggan/{name}.yaml")
    model, hp, g = cli.model, cli.model.hparams, cli.model.generator
    assert (hp.loss, hp.n_dis, hp.lr_g, hp.lr_d, hp.ema_decay, hp.ema_start) == ("hinge", 4, 2e-4, 2e-4, 0.9999, 1000)
    assert tuple(hp.betas_g) == tuple(hp.betas_d) == (0.0, 0.999) and hp.ortho_weight == beta
    assert cli.datamodule.batch_size == 50 and cli.trainer.max_steps == 125_000 and model.num_classes == 10
    assert (g.shared.embedding_dim if g.shared is not None else 0, g.hierarchical, g.top_channels) == (shared,
                                                                                                    hierarchical, 256)
    assert len(model.g_regularizers) == (1 if beta else 0)
    # BigGAN's D: 4 blocks of 256 (8 convs, 2 learnable shortcuts), the linear head and the class embedding, all SN
    assert sum(isinstance(m, SpectralNorm) for m in model.discriminator.modules()) == 12
    assert model.discriminator.feature_dim == 256
    assert all(isinstance(m.parametrizations.weight[0], SpectralNorm) for m in (g.linear, g.blocks[0].conv1))
    (settings,) = cifar_stand_in
    assert (settings.n_fid, settings.n_is, settings.reference_split) == (50_000, 50_000, "train")
    header = (REPO_ROOT / f"configs/biggan/{name}.yaml").read_text()
    assert "9.22" in header and "14.73" in header and scheme in header


@pytest.mark.parametrize("name", sorted(GPU))
def test_cifar10_config_one_step_on_stand_in_images(name, run_dir, cifar_stand_in):
    from conftest import load_config

    cli = load_config(f"configs/biggan/{name}.yaml", "--trainer.max_steps", "1", "--trainer.enable_checkpointing",
                      "false", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
                      "--data.batch_size", "4", "--model.init_args.generator.init_args.width", "2",
                      "--model.init_args.discriminator.init_args.discriminator.init_args.width", "0.05",
                      "--evaluation.image_metrics", "false", "--evaluation.n_samples", "16")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1 and all(torch.isfinite(v) for v in cli.model.last_losses.values())


def test_gpu_table_passes_dry_run(run_dir, cifar_stand_in, capsys):
    """``repro reproduce paper_tables/biggan-cifar10.yaml --dry-run`` resolves both rows (configs, overrides, the
    truncation columns against the metric registry) and trains nothing."""
    from repro.cli import main

    main(["reproduce", str(REPO_ROOT / "paper_tables/biggan-cifar10.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert "script" in out and "paper" in out
    assert not (run_dir / "runs").exists() and not (run_dir / "results").exists()

"""The GPU configs of issue 15 (relativistic GANs on CIFAR-10 from the authors' stable.sh / unstable.sh, and
SSGAN with Mimicry's CIFAR-10 setup) parse through the CLI, carry the settings their headers state, and every
one states the published numbers it aims at; one step of each runs on stand-in images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import repro.data.module as data_module
import repro.preflight as preflight
from repro.fit import REPO_ROOT, ReproCLI
from repro.nets import ResNetDiscriminator, StandardCNNDiscriminator, StandardCNNGenerator
from repro.normalization import ShiftOnlyNorm, SpectralNorm
from repro.regularizers import GradientPenalty
from repro.variants import SSGAN, RelativisticGAN

GPU_CONFIGS = sorted(str(p.relative_to(REPO_ROOT)) for folder in ("relativistic", "ssgan")
                     for p in (REPO_ROOT / "configs" / folder).glob("*.yaml"))

# AlexiaJM/RelativisticGAN stable.sh / unstable.sh: config -> (lr, betas, n_D, D norm, GP, BN in G, activation)
RELATIVISTIC = {
    "cifar10_stable_lr2e-4_nd1": (2e-4, (0.5, 0.999), 1, "spectral", False, True, "relu"),
    "cifar10_stable_lr2e-4_nd1_gp": (2e-4, (0.5, 0.999), 1, "spectral", True, True, "relu"),
    "cifar10_stable_lr1e-4_nd5": (1e-4, (0.5, 0.9), 5, "spectral", False, True, "relu"),
    "cifar10_unstable_lr1e-3": (1e-3, (0.5, 0.999), 1, "batch", False, True, "relu"),
    "cifar10_unstable_betas0.9": (1e-4, (0.9, 0.9), 1, "batch", False, True, "relu"),
    "cifar10_unstable_no_bn": (1e-4, (0.5, 0.999), 1, "none", False, False, "relu"),
    "cifar10_unstable_tanh": (1e-4, (0.5, 0.999), 1, "batch", False, True, "tanh"),
}


@pytest.fixture(autouse=True)
def fake_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_images`` returns 64 random uint8 CIFAR-sized images (the CLI reads the data to check shapes)."""
    def fake(name: str, root: object, download: bool, image_size: int | None = None) -> tuple[torch.Tensor, None]:
        return torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), None

    monkeypatch.setattr(data_module, "load_images", fake)


@pytest.fixture(autouse=True)
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list:
    """The configs ask for Inception FID / IS, whose preflight loads the Inception weights (absent on a machine
    without them): record the evaluation settings the preflight receives instead of checking the weights."""
    seen: list = []
    monkeypatch.setattr(preflight, "check_evaluation", lambda evaluation, datamodule: seen.append(
        (evaluation.settings, {family.name for family in evaluation.selected(datamodule)})))
    return seen


def load(config: str, *extra: str) -> ReproCLI:
    return ReproCLI(args=["--config", str(REPO_ROOT / config), "--trainer.logger", "false", *extra])


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_every_gpu_config_states_its_target_and_parses(config, run_dir):
    header = [line for line in Path(REPO_ROOT / config).read_text().splitlines() if line.startswith("#")]
    assert any("FID" in line for line in header), "no published number in the header"
    cli = load(config)
    assert cli.trainer.max_steps == 100_000 and cli.datamodule.dataset == "cifar10"


def test_ssgan_config_is_mimicrys(run_dir, evaluations):
    cli = load("configs/ssgan/cifar10.yaml")
    model, hp = cli.model, cli.model.hparams
    assert isinstance(model, SSGAN) and isinstance(model.discriminator.inner, ResNetDiscriminator)
    assert (hp.loss, hp.n_dis, hp.lr_g, hp.lr_d, hp.lr_decay) == ("hinge", 5, 2e-4, 2e-4, "linear")
    assert tuple(hp.betas_g) == tuple(hp.betas_d) == (0.0, 0.9)
    assert (hp.d_rotation_weight, hp.g_rotation_weight) == (1.0, 0.2)
    assert cli.datamodule.batch_size == 64 and model.z_dim == 128
    # spectral norm on every D layer: 4 blocks (2 convs each, 2 shortcuts), the GAN head and the rotation head
    assert sum(isinstance(m, SpectralNorm) for m in model.discriminator.modules()) == 12
    assert isinstance(model.discriminator.rotation_head.parametrizations.weight[0], SpectralNorm)
    ((evaluation, families),) = evaluations
    assert "image" in families and (evaluation.n_fid, evaluation.n_is) == (50_000, 50_000)
    assert evaluation.reference_split == "train"


@pytest.mark.parametrize("name", sorted(RELATIVISTIC))
def test_relativistic_config_is_the_authors_setup(name, run_dir):
    lr, betas, n_dis, norm, gp, g_bn, activation = RELATIVISTIC[name]
    cli = load(f"configs/relativistic/{name}.yaml")
    model, hp = cli.model, cli.model.hparams
    assert isinstance(model, RelativisticGAN) and hp.kind == ("rsgan" if gp else "rasgan") and not hp.paper_era
    assert (hp.lr_g, hp.lr_d, hp.n_dis, hp.optimizer, hp.lr_decay) == (lr, lr, n_dis, "adam", "none")
    assert tuple(hp.betas_g) == tuple(hp.betas_d) == betas
    assert cli.datamodule.batch_size == 32 and model.z_dim == 128 and cli.trainer.max_steps == 100_000
    g, d = model.generator, model.discriminator
    assert isinstance(g, StandardCNNGenerator) and isinstance(d, StandardCNNDiscriminator)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == g_bn
    assert (sum(isinstance(m, SpectralNorm) for m in d.modules()) == 8) == (norm == "spectral")  # 7 convs + head
    assert any(isinstance(m, ShiftOnlyNorm) and m.kind == "batch" for m in d.modules()) == (norm == "batch")
    tanh = [isinstance(m, torch.nn.Tanh) for net in (g, d) for m in net.modules()]
    assert (sum(tanh) > 1) == (activation == "tanh")  # G's output tanh is always there
    assert [type(r) for r in model.d_regularizers] == ([GradientPenalty] if gp else [])
    if gp:
        assert model.d_regularizers[0].weight == 10.0  # --penalty 10


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_one_step_on_stand_in_images(config, run_dir):
    width = "0.05" if "ssgan" in config else "2"  # ResNet widths are multipliers, standard-CNN widths channels
    small = ["--model.init_args.generator.init_args.width", width,
             "--model.init_args.discriminator.init_args.width", width]
    cli = load(config, "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--data.batch_size", "8",
               "--evaluation.image_metrics", "false", "--evaluation.n_samples", "16", *small)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    assert all(torch.isfinite(v) for v in cli.model._last.values())


def test_relativistic_loss_choice_and_paper_era_override(run_dir):
    cli = load("configs/relativistic/cifar10_stable_lr2e-4_nd1.yaml", "--model.init_args.kind", "ralsgan",
               "--model.init_args.paper_era", "true")
    assert cli.model.hparams.kind == "ralsgan" and cli.model.hparams.paper_era


# rows issue 15 adds to the CPU tables (unrun until the queue trains them: the pages show "not run")
NEW_ROWS = {"toy": (["label_smoothing", "minibatch", "feature_matching", "rsgan", "rasgan", "ralsgan", "rahinge"],
                    ["ring8", "grid25"]),
            "stacked-mnist": (["label_smoothing", "minibatch", "feature_matching", "rsgan", "rasgan", "ralsgan",
                               "rahinge"], ["quarter", "half"])}
TABLE_ROWS = {table: [f"{v}-{s}" for v in variants for s in sets] for table, (variants, sets) in NEW_ROWS.items()}


@pytest.mark.parametrize("table", sorted(TABLE_ROWS))
def test_table_rows_resolve_like_repro_reproduce(table, run_dir):
    """The rows parse exactly as ``repro reproduce <table>`` checks them before training (config + overrides)."""
    from repro.tables.plan import plan
    from repro.tables.runner import check_configs
    from repro.tables.spec import load_spec

    spec = load_spec(REPO_ROOT / "paper_tables" / f"{table}.yaml")
    runs = plan(spec, seeds=[0], only=TABLE_ROWS[table])
    assert sorted({r.row.id for r in runs}) == sorted(TABLE_ROWS[table])
    check_configs(spec, runs)

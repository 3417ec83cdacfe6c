"""The GPU configs of issue 15 (relativistic GANs on CIFAR-10 from the authors' stable.sh / unstable.sh, and
SSGAN with Mimicry's CIFAR-10 setup) parse through the CLI, carry the settings their headers state, and every
one states the published numbers it aims at; one step of each runs on stand-in images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import repro.data.module as data_module
from repro.fit import REPO_ROOT, ReproCLI
from repro.nets import ResNetDiscriminator
from repro.normalization import SpectralNorm
from repro.variants import SSGAN

GPU_CONFIGS = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs" / "ssgan").glob("*.yaml"))


@pytest.fixture(autouse=True)
def fake_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_images`` returns 64 random uint8 CIFAR-sized images (the CLI reads the data to check shapes)."""
    monkeypatch.setattr(data_module, "load_images",
                        lambda name, root, download: (torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), None))


def load(config: str, *extra: str) -> ReproCLI:
    return ReproCLI(args=["--config", str(REPO_ROOT / config), "--trainer.logger", "false", *extra])


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_every_gpu_config_states_its_target_and_parses(config, run_dir):
    header = [line for line in Path(REPO_ROOT / config).read_text().splitlines() if line.startswith("#")]
    assert any("FID" in line for line in header), "no published number in the header"
    cli = load(config)
    assert cli.trainer.max_steps == 100_000 and cli.datamodule.dataset == "cifar10"


def test_ssgan_config_is_mimicrys(run_dir):
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
    evaluation = cli.config["evaluation"]
    assert (evaluation.image_metrics, evaluation.n_fid, evaluation.n_is) == (True, 50_000, 50_000)


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_one_step_on_stand_in_images(config, run_dir):
    small = ["--model.init_args.generator.init_args.width", "0.05",
             "--model.init_args.discriminator.init_args.width", "0.05"]
    cli = load(config, "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--data.batch_size", "8",
               "--evaluation.image_metrics", "false", "--evaluation.n_samples", "16", *small)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    assert all(torch.isfinite(v) for v in cli.model._last.values())


# rows issue 15 adds to the CPU tables (unrun until the queue trains them: the pages show "not run")
TABLE_ROWS = {
    "toy": ["label_smoothing-ring8", "label_smoothing-grid25", "minibatch-ring8", "minibatch-grid25"],
    "stacked-mnist": ["label_smoothing-quarter", "label_smoothing-half", "minibatch-quarter", "minibatch-half"],
}


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

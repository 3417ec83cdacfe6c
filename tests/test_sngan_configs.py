"""The SN-GAN settings A-F (Miyato et al. 2018, Table 1) and the GN-GAN settings load through the CLI;
one step of each architecture runs on fake 32x32 / 48x48 images (a test stand-in for CIFAR-10 / STL-10)."""
from __future__ import annotations

import pytest
import torch
from conftest import fake_native_images, load_config

from repro.nets import ResNetDiscriminator, StandardCNNDiscriminator
from repro.normalization import SpectralNorm
from repro.variants import GNGAN, SNGAN

# Miyato et al. 2018, Table 1: setting -> (Adam lr, beta1, beta2, n_dis).
TABLE_1 = {
    "A": (1e-4, 0.5, 0.9, 5),
    "B": (1e-4, 0.5, 0.999, 1),
    "C": (2e-4, 0.5, 0.999, 1),
    "D": (1e-3, 0.5, 0.9, 5),
    "E": (1e-3, 0.5, 0.999, 5),
    "F": (1e-3, 0.9, 0.999, 5),
}
SIZES = {"cifar10": 32, "stl10": 48}


@pytest.fixture(autouse=True)
def fake_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test stand-in for CIFAR-10 / STL-10 (the CLI reads the data to check shapes): ``load_images``
    returns 64 random uint8 images of the set's native size."""
    fake_native_images(monkeypatch, {"cifar10": (3, 32), "stl10": (3, 96)})



@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
@pytest.mark.parametrize("setting", sorted(TABLE_1))
def test_setting_matches_table_1(setting, dataset, run_dir):
    cli = load_config(f"configs/sngan/{dataset}_cnn_{setting}.yaml")
    model, hp = cli.model, cli.model.hparams
    lr, b1, b2, n_dis = TABLE_1[setting]
    assert isinstance(model, SNGAN) and isinstance(model.discriminator, StandardCNNDiscriminator)
    assert (hp.lr_g, hp.lr_d, hp.n_dis) == (lr, lr, n_dis)
    assert tuple(hp.betas_g) == tuple(hp.betas_d) == (b1, b2)
    assert hp.loss == "nonsaturating" and hp.optimizer == "adam"
    assert cli.trainer.max_steps == 100_000 and cli.datamodule.batch_size == 64
    assert cli.datamodule.dataset == dataset and cli.datamodule.image_size == SIZES[dataset]
    assert model.z_dim == 128
    assert sum(isinstance(m, SpectralNorm) for m in model.discriminator.modules()) == 8  # 7 convs + dense


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
def test_sngan_resnet_config(dataset, run_dir):
    hp = (cli := load_config(f"configs/sngan/{dataset}_resnet.yaml")).model.hparams
    assert isinstance(cli.model.discriminator, ResNetDiscriminator)
    assert (hp.loss, hp.lr_g, hp.lr_d, tuple(hp.betas_d), hp.n_dis) == ("hinge", 2e-4, 2e-4, (0.0, 0.9), 5)


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
@pytest.mark.parametrize(
    "arch, loss, lr_d, n_dis, decay", [("cnn", "bounded_bce", 2e-4, 1, "none"), ("resnet", "hinge", 4e-4, 5, "linear")]
)
def test_gngan_configs(dataset, arch, loss, lr_d, n_dis, decay, run_dir):
    cli = load_config(f"configs/gngan/{dataset}_{arch}.yaml")
    hp = cli.model.hparams
    assert isinstance(cli.model, GNGAN)
    assert (hp.loss, hp.lr_g, hp.lr_d, hp.n_dis, hp.lr_decay) == (loss, 2e-4, lr_d, n_dis, decay)
    assert tuple(hp.betas_g) == tuple(hp.betas_d) == (0.0, 0.9)
    assert (cli.datamodule.batch_size, hp.g_batch_size, hp.ema_decay) == (64, 128, 0.9999)
    assert cli.trainer.max_steps == 200_000 and cli.datamodule.image_size == SIZES[dataset]


@pytest.mark.parametrize(
    "config",
    ["configs/sngan/cifar10_cnn_D.yaml", "configs/sngan/stl10_resnet.yaml", "configs/gngan/stl10_cnn.yaml",
     "configs/gngan/cifar10_resnet.yaml"],
)
def test_one_step_on_fake_images(config, run_dir):
    small = "0.05" if "resnet" in config else "2"
    cli = load_config(
        config, "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--data.batch_size", "2",
        "--model.init_args.g_batch_size", "2", "--model.init_args.generator.init_args.width", small,
        "--model.init_args.discriminator.init_args.width", small,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    assert cli.datamodule.data.shape[-1] == (48 if "stl10" in config else 32)
    assert all(torch.isfinite(v) for v in cli.model._last.values())


def test_comparator_override_loads(run_dir):
    """The paper's comparators are discriminator options on any loss, e.g. weight norm with NSGAN."""
    cli = load_config(
        "configs/sngan/cifar10_cnn_C.yaml", "--model.class_path", "repro.variants.NSGAN",
        "--model.init_args.discriminator.init_args.norm", "weight",
    )
    assert type(cli.model).__name__ == "NSGAN"
    assert not any(isinstance(m, SpectralNorm) for m in cli.model.discriminator.modules())
    assert cli.model.discriminator.head.parametrizations.weight[0].__class__.__name__ == "UnitRowNorm"

"""The xICFG and WGAN-TS GPU configs carry the authors' settings line by line (riejohnson/cfg-gan-pt's
train_cfggan.py, TPAMI version, and the ICML paper's T / eta; harryliew/WGAN-TS's WGAN_TS.py), and one step
of each network family runs on fake images (stand-ins for MNIST / SVHN / CIFAR-10 / LSUN)."""
from __future__ import annotations

import pytest
import torch
from conftest import fake_native_images, load_config

from repro.nets import DCGANDiscriminator, DCGANGenerator
from repro.nets.cfg import DCGANxDiscriminator, DCGANxGenerator, ResNet4Discriminator, ResNet4Generator
from repro.variants import WGANTS, XICFG

# train_cfggan.py: data set -> (image size, channels, model, width, depth, eta with batch norm)
CFG_CODE = {
    "mnist": (32, 1, "dcganx", 32, 3, 0.5),
    "svhn": (32, 3, "dcganx", 64, 3, 0.25),
    "lsun64": (64, 3, "resnet4", 64, 4, 1.0),
}
CFG_NETS = {"dcganx": (DCGANxGenerator, DCGANxDiscriminator), "resnet4": (ResNet4Generator, ResNet4Discriminator)}
DATASET = {"mnist": "mnist", "svhn": "svhn", "lsun64": "image_folder", "cifar10": "cifar10"}


@pytest.fixture(autouse=True)
def fake_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_images`` returns 64 random uint8 images of the set's native size."""
    fake_native_images(monkeypatch, {"mnist": (1, 28), "svhn": (3, 32), "cifar10": (3, 32), "image_folder": (3, 64)})



@pytest.mark.parametrize("paper", ["code", "icml"])
@pytest.mark.parametrize("dataset", sorted(CFG_CODE))
def test_xicfg_gpu_config_matches_the_authors(dataset, paper, run_dir):
    size, channels, model_name, width, depth, eta_code = CFG_CODE[dataset]
    cli = load_config(f"configs/xicfg/{dataset}{'_icml' if paper == 'icml' else ''}.yaml")
    model, hp, dm = cli.model, cli.model.hparams, cli.datamodule
    assert isinstance(model, XICFG)
    # the TPAMI code's defaults vs the ICML paper's T = 10, eta = 1
    assert (model.functional_steps, model.eta) == ((15, eta_code) if paper == "code" else (10, 1.0))
    assert (model.d_updates, hp.refit_batches, hp.refit_epochs, hp.refit_lr_decay, hp.refit_max_decays) == (1, 10, 10, 0.1, 3)
    assert hp.refit_batches * dm.batch_size == 640  # cfg_N
    assert (hp.init_std, hp.lr_g, hp.lr_d, hp.rmsprop_alpha, hp.rmsprop_eps) == (0.01, 2.5e-4, 2.5e-4, 0.95, 1e-18)
    for opt in model.configure_optimizers():
        assert isinstance(opt, torch.optim.RMSprop)
        assert (opt.defaults["lr"], opt.defaults["alpha"], opt.defaults["eps"]) == (2.5e-4, 0.95, 1e-18)
    assert (dm.dataset, dm.batch_size, dm.image_size, model.z_dim) == (DATASET[dataset], 64, size, 100)
    assert model.n_dis == model.functional_steps and cli.trainer.max_steps == 10_000  # --num_stages
    g_cls, d_cls = CFG_NETS[model_name]
    assert type(model.generator) is g_cls and type(model.discriminator) is d_cls
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.generator.modules())  # norm_type bn
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    convs = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    assert len([m for m in convs if m.stride[0] == 2]) == (depth if model_name == "dcganx" else 0)
    assert convs[0].in_channels == channels and convs[0].out_channels == width
    assert model.generator(torch.zeros(2, 100)).shape == (2, channels, size, size)


@pytest.mark.parametrize("dataset, channels", [("mnist", 1), ("cifar10", 3), ("lsun64", 3)])
def test_wgants_gpu_config_matches_the_authors(dataset, channels, run_dir):
    cli = load_config(f"configs/wgants/{dataset}.yaml")
    model, hp, dm = cli.model, cli.model.hparams, cli.datamodule
    assert isinstance(model, WGANTS)
    assert (model.regression_steps, model.ot_weight, model.weight_scaling, hp.n_dis) == (5, 10.0, False, 1)
    assert (hp.lr_g, hp.lr_d, tuple(hp.betas_g), tuple(hp.betas_d), hp.optimizer) == (1e-4, 1e-4, (0.5, 0.999), (0.5, 0.999), "adam")
    assert (dm.dataset, dm.batch_size, dm.image_size, model.z_dim) == (DATASET[dataset], 64, 64, 100)
    assert type(model.generator) is DCGANGenerator and type(model.discriminator) is DCGANDiscriminator
    for net in (model.generator, model.discriminator):  # DCGAN_G_nobn / DCGAN_D_nobn_bias
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.generator(torch.zeros(2, 100)).shape == (2, channels, 64, 64)
    assert model.discriminator(torch.zeros(2, channels, 64, 64)).shape == (2,)


@pytest.mark.parametrize("config", ["configs/xicfg/mnist.yaml", "configs/xicfg/lsun64.yaml", "configs/wgants/cifar10.yaml"])
def test_one_step_on_fake_images(config, run_dir):
    small = ["--model.init_args.generator.init_args.width", "4", "--model.init_args.discriminator.init_args.width", "4"]
    if "xicfg" in config:
        small += ["--model.init_args.functional_steps", "2", "--model.init_args.refit_batches", "1",
                  "--model.init_args.refit_epochs", "1"]
    cli = load_config(config, "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--data.batch_size", "4", *small)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    assert all(torch.isfinite(v) for v in cli.model._last.values())

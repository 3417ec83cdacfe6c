"""Exact resume (issue 8): 40 uninterrupted steps == 20 steps, checkpoint, resume, 20 more steps.

The 20-step checkpoint is written mid-run (and mid-epoch) by the uninterrupted run itself, as a
killed run would leave it; the resumed run must end bit-identical (``torch.equal``) in every
parameter, buffer (BN statistics, SN u vectors, EMA weights), optimizer and scheduler state and in
its final metrics.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from repro.fit import REPO_ROOT, ReproCLI

# (config, extra args): a plain variant with EMA + linear lr decay, WGAN-GP (n_dis = 5, double
# backward), SN-GAN (u / v buffers), xICFG and WGAN-TS.
CASES: dict[str, tuple[str, list[str]]] = {
    "nsgan": ("configs/ring8/nsgan.yaml", ["--model.init_args.ema_decay", "0.9", "--model.init_args.lr_decay", "linear"]),
    "wgangp": ("configs/ring8/wgangp.yaml", []),
    "sngan": ("configs/ring8/sngan.yaml", []),
    # xICFG: D snapshots, the approximator's init flag, the refit's restarted optimizer (short stages)
    "xicfg": ("configs/ring8/xicfg.yaml", ["--model.init_args.functional_steps", "3", "--model.init_args.refit_batches",
                                           "2", "--model.init_args.refit_epochs", "2"]),
    # WGAN-TS: one LP and 5 regression steps per D update, weight scaling on
    "wgants": ("configs/ring8/wgants.yaml", ["--model.init_args.weight_scaling", "true"]),
    # historical averaging: both players' running parameter means (buffers resized on load)
    "historical_averaging": ("configs/ring8/historical_averaging.yaml", []),
    # virtual batch norm: the fixed reference latents
    "vbn": ("configs/ring8/vbn.yaml", []),
    # G's step on the real batch: a relativistic loss (paper-era form) and feature matching
    "ralsgan": ("configs/ring8/ralsgan.yaml", ["--model.init_args.paper_era", "true"]),
    "feature_matching": ("configs/ring8/feature_matching.yaml", []),
    # SAGAN: SN u / v in G and D, the attention blocks' sigma; DCGAN: BN in both nets (MNIST subsets in batches of 4,
    # 30 steps an epoch)
    "sagan": ("configs/mnist/sagan.yaml", ["--data.num_samples", "120", "--data.batch_size", "4"]),
    "dcgan": ("configs/mnist/dcgan.yaml", ["--data.num_samples", "120", "--data.batch_size", "4"]),
    # class labels in the batches and the fakes' label draws (MNIST batches of 4: 32 steps per epoch, so the
    # resume crosses an epoch too; AC-GAN's labels take the same path)
    "projection": ("configs/mnist/projection.yaml", ["--data.num_samples", "128", "--data.batch_size", "4"]),
    # S3GAN: the fixed labelled subset's -1 labels, the classifier and rotation heads; S2GAN: cluster ids (pre-stage
    # cached once, before the first fit)
    "s3gan": ("configs/mnist/s3gan.yaml", ["--data.num_samples", "128", "--data.batch_size", "4"]),
    "s2gan": ("configs/mnist/s2gan.yaml", ["--data.num_samples", "128", "--data.batch_size", "4",
                                          "--model.init_args.rotation_steps", "10"]),
    # BigGAN on labelled MNIST: labels in the loader state, SN in G, conditional BNs, EMA starting after the resume
    "biggan": ("configs/mnist/biggan.yaml", ["--model.init_args.ema_start", "25", "--data.num_samples", "150",
                                            "--data.batch_size", "4", "--model.init_args.ema_standing_batches", "2"]),
}


def _cli(config: str, extra: list[str], out: Path, max_steps: int) -> ReproCLI:
    return ReproCLI(
        args=[
            "--config", str(REPO_ROOT / config),
            "--trainer.max_steps", str(max_steps),
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_checkpointing", "true",
            "--trainer.log_every_n_steps", "5",
            "--trainer.default_root_dir", str(out),
            "--trainer.logger.init_args.save_dir", str(out),
            "--data.num_samples", "2000",  # 31 NSGAN steps (6 WGAN-GP steps) per epoch: resume crosses epochs
            "--data.batch_size", "64",
            "--samples.every_n_steps", "0",
            "--evaluation.n_samples", "500",
            *extra,
        ]
    )


def _fit(config: str, extra: list[str], out: Path, ckpt: str | None = None) -> tuple[ReproCLI, dict[str, Any]]:
    cli = _cli(config, extra, out, 40)
    if cli.model.preparation_missing(cli.datamodule):  # as `repro fit` does (S2GAN's clusters)
        cli.model.prepare(cli.datamodule)
    if ckpt is None:  # the uninterrupted run also leaves the step-20 checkpoint a killed run would
        cli.trainer.callbacks.append(
            ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=20, save_top_k=-1, filename="{step}")
        )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
    metrics = json.loads((Path(cli.trainer.log_dir) / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return cli, metrics


def _optimizer_tensors(cli: ReproCLI) -> list[tuple[str, torch.Tensor]]:
    out = []
    for i, opt in enumerate(cli.trainer.optimizers):
        for pid, state in opt.state_dict()["state"].items():
            out += [(f"opt{i}.{pid}.{k}", torch.as_tensor(v)) for k, v in state.items()]
    return out


@pytest.mark.parametrize("variant", list(CASES))
def test_resume_is_bit_identical(variant: str, run_dir: Path) -> None:
    config, extra = CASES[variant]
    full, full_metrics = _fit(config, extra, run_dir / "full")
    ckpt = run_dir / "full" / "ckpt" / "step=20.ckpt"
    assert ckpt.exists()
    resumed, resumed_metrics = _fit(config, extra, run_dir / "resumed", ckpt=str(ckpt))

    assert full.trainer.global_step == resumed.trainer.global_step == 40
    a, b = full.model.state_dict(), resumed.model.state_dict()  # parameters and buffers, EMA included
    assert a.keys() == b.keys()
    assert len(a) > 10
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"{len(unequal)} tensors differ after resume, e.g. {unequal[:3]}"
    opt_a, opt_b = _optimizer_tensors(full), _optimizer_tensors(resumed)
    assert [k for k, _ in opt_a] == [k for k, _ in opt_b] and len(opt_a) > 0
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(opt_a, opt_b)), "optimizer state differs"
    sched_a = [s.scheduler.state_dict() for s in full.trainer.lr_scheduler_configs]
    sched_b = [s.scheduler.state_dict() for s in resumed.trainer.lr_scheduler_configs]
    assert sched_a == sched_b
    assert full_metrics == resumed_metrics
    # the run really trained: weights moved from the step-20 checkpoint
    at_20 = torch.load(ckpt, weights_only=False)["state_dict"]
    assert any(not torch.equal(at_20[k], a[k]) for k in a if a[k].dtype.is_floating_point)


def test_sample_plots_do_not_change_training(run_dir: Path) -> None:
    """Plotting draws its own samples under a forked RNG: the trajectory is the same with or without plots."""
    weights = []
    for every in ("0", "3"):
        cli = _cli("configs/ring8/nsgan.yaml", ["--samples.every_n_steps", every], run_dir / every, 10)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        weights.append(cli.model.state_dict())
    assert list((run_dir / "3").rglob("step0000003.png")), "no plot was written"
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

"""``trainer.precision: 64-true``: Lightning makes float64 torch's default dtype only inside training steps, so
every latent drawn outside one (sample plots, the final evaluation, the conditioning trace, the W1 trace, EMA
standing statistics) must be drawn in the model's dtype (``GANModule.sample_z``), not torch's default float32."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import default_dtype

from repro.fit import run_fit
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import NSGAN

FAST = ["--trainer.precision", "64-true", "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.log_every_n_steps", "1", "--seed_everything", "0", "--conditioning.every_n_steps", "0",
        "--conditioning.n_samples", "2", "--evaluation.truncation", "[0.5]"]
TOY = ["--data.num_samples", "512", "--data.batch_size", "32", "--evaluation.n_samples", "200",
       "--model.init_args.ema_decay", "0.9"]  # EMA: G's BN statistics are re-estimated before sampling


def _finished_record(run: object) -> dict:
    folder = Path(run.trainer.logger.log_dir)  # type: ignore[attr-defined]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "finished", record
    assert (folder / "samples" / "final.png").stat().st_size > 0
    assert (folder / "conditioning" / "trace.png").is_file()
    assert run.model.dtype == torch.float64  # type: ignore[attr-defined]
    return record


def test_sample_z_draws_in_the_models_dtype_as_inside_a_step() -> None:
    """Outside a step (default dtype float32) a float64 model's latents are the float64 values a 64-true step
    draws (torch's default dtype float64) from the same RNG state; a float32 model's are unchanged."""
    model = NSGAN(MLPGenerator(z_dim=3, out_dim=2, width=8, batch_norm=True), MLPDiscriminator(in_dim=2, width=8),
                  ema_decay=0.9)
    torch.manual_seed(5)
    assert torch.equal(model.sample_z(6), (torch.manual_seed(5), torch.randn(6, 3))[1])
    model.double()
    torch.manual_seed(5)
    drawn = model.sample_z(6)
    with default_dtype(torch.float64):
        torch.manual_seed(5)
        in_step = torch.randn(6, 3)
    assert drawn.dtype == torch.float64 and torch.equal(drawn, in_step)
    truncated = model.sample_z(50, truncation=0.5)
    assert truncated.dtype == torch.float64 and truncated.abs().max() <= 0.5
    assert model.sample(4).dtype == torch.float64  # EMA G: standing statistics re-estimated from float64 latents


def test_ring8_64_true_writes_its_scatter_plot_and_metrics(run_dir: Path) -> None:
    run = run_fit(["--config", "configs/ring8/nsgan.yaml", *FAST, *TOY])
    metrics = _finished_record(run)["metrics"]
    assert any(k.endswith("_trunc0.5") for k in metrics) and any(not k.endswith("_trunc0.5") for k in metrics)


def test_wgan_w1_trace_under_64_true(run_dir: Path) -> None:
    trace = {"class_path": "repro.callbacks.w1.BatchW1Trace", "init_args": {"every_n_steps": 1}}
    run = run_fit(["--config", "configs/ring8/wgan.yaml", *FAST, *TOY, "--trainer.callbacks", json.dumps([trace])])
    _finished_record(run)


def test_mnist_subset_64_true_writes_its_grid_and_image_metrics(run_dir: Path, mnist_root: Path) -> None:
    run = run_fit(["--config", "configs/mnist/nsgan.yaml", *FAST, "--data.data_root", str(mnist_root),
                   "--data.num_samples", "256", "--data.batch_size", "16",
                   "--model.init_args.generator.init_args.width", "8",
                   "--model.init_args.discriminator.init_args.width", "8", "--evaluation.image_metrics", "true",
                   "--evaluation.n_fid", "200", "--evaluation.n_is", "200", "--evaluation.n_reference", "300",
                   "--evaluation.batch_size", "100", "--evaluation.cache_dir", str(run_dir / "cache")])
    metrics = _finished_record(run)["metrics"]
    assert any(k.startswith("fid") and k.endswith("_trunc0.5") for k in metrics), sorted(metrics)

"""DDP on CPU (issue 7): 2 gloo processes, `strategy=ddp`, every variant, through the `repro fit` CLI.

The pytest side launches this file once with ``torch.distributed.run`` (2 processes, as on a node);
each process trains every variant for 10 generator steps with ``RankSyncCheck`` (which all-gathers
every parameter and buffer (SN's u / v, BN statistics, EMA weights included) and compares them bit for bit after
every step) and writes what it saw per rank. One launch for all variants keeps the imports and the
process-group set-up to one (~10 s) instead of one per variant.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from repro.callbacks.divergence import TrainingDiverged
from repro.fit import REPO_ROOT, ReproCLI
from repro.metrics.features import FeatureExtractor
from repro.metrics.image import ImageProtocol, evaluate_images

VARIANTS = ["vanilla", "nsgan", "lsgan", "wgan", "wgangp", "sngan", "gngan", "tan", "rfgan", "jcgan", "xicfg", "wgants",
            "label_smoothing", "minibatch", "vbn", "historical_averaging", "ssgan", "rasgan", "rsgan", "ralsgan",
            "rahinge", "feature_matching", "dcgan", "sagan", "projection", "acgan", "biggan", "s3gan", "s2gan"]
# image-only configs (rotations need images; DCGAN and SAGAN are conv nets; class labels): a 512-image MNIST subset
IMAGE_CONFIGS = {name: f"configs/mnist/{name}.yaml" for name in ("ssgan", "dcgan", "sagan", "projection", "acgan",
                                                                  "biggan", "s3gan", "s2gan")}
STEPS = 10
PER_DEVICE_BATCH = 32
IMAGE_BATCH = 8  # per device, for the image configs: their conv nets cost ~10x the ring8 MLPs' per sample


def fit_args(variant: str, out: Path, devices: int, batch: int, steps: int = STEPS) -> list[str]:
    args = [
        "--config", str(REPO_ROOT / IMAGE_CONFIGS.get(variant, f"configs/ring8/{variant}.yaml")),
        "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.log_every_n_steps", "5", "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        "--data.num_samples", "4096", "--data.batch_size", str(batch),
        "--samples.every_n_steps", "5", "--evaluation.n_samples", "200",
    ]
    if devices > 1:
        args += ["--trainer.strategy", "ddp", "--trainer.callbacks+=repro.callbacks.RankSyncCheck"]
    if variant in IMAGE_CONFIGS:
        args += ["--data.num_samples", "512"]
    if variant == "nsgan":  # EMA weights must agree too
        args += ["--model.init_args.ema_decay", "0.99"]
    if variant == "biggan":  # labelled MNIST; the EMA averages from step 5 on
        args += ["--model.init_args.ema_start", "5"]
    if variant == "rfgan":  # a short autoencoder pre-training, cached per run
        args += ["--model.init_args.ae_steps", "20", "--model.init_args.ae_cache_dir", str(out / "ae")]
    if variant == "s2gan":  # a short rotation pre-training; its cluster ids cached per run, the same on both ranks
        args += ["--model.init_args.rotation_steps", "10", "--model.init_args.cluster_cache_dir", str(out / "clusters")]
    if variant == "xicfg":  # short stages; the refit's epoch loss is averaged over the ranks
        args += ["--model.init_args.functional_steps", "3", "--model.init_args.refit_batches", "2",
                 "--model.init_args.refit_epochs", "3"]
    if variant == "wgants":  # each rank solves the LP of its own batches; weight scaling must act alike
        args += ["--model.init_args.weight_scaling", "true"]
    return args


class _LossTrace:
    """Records (d_loss, g_loss) after every generator step (a host sync per step: tests only)."""

    def __init__(self) -> None:
        self.losses: list[tuple[float, float]] = []

    def __call__(self, module: Any) -> None:
        self.losses.append((float(module._last["d_loss"]), float(module._last["g_loss"])))


def train(variant: str, out: Path, devices: int, batch: int, steps: int = STEPS, ckpt: Path | None = None,
          save_every: int = 0) -> tuple[ReproCLI, list]:
    cli = ReproCLI(args=fit_args(variant, out, devices, batch, steps))
    if save_every:
        cli.trainer.callbacks.append(ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=save_every,
                                                     save_top_k=-1, filename="{step}"))
    if variant in ("rfgan", "s2gan"):
        cli.model.prepare(cli.datamodule)
    trace = _LossTrace()
    step = cli.model.training_step

    def traced(batch_: torch.Tensor, batch_idx: int) -> None:
        step(batch_, batch_idx)
        trace(cli.model)

    cli.model.training_step = traced
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
    return cli, trace.losses


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name in ("generator", "discriminator"):
        for t in getattr(module, name).parameters():
            h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class StandIn(FeatureExtractor):
    """A fixed random projection standing in for Inception: uint8 (3, 8, 8) -> 16 features, 10 logits."""

    name, num_features, sha256 = "standin", 16, "0" * 64

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(192, 16, generator=g) / 14, requires_grad=False)
        self.cls = torch.nn.Parameter(torch.randn(16, 10, generator=g), requires_grad=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.tanh(images.flatten(1).float().div(127.5).sub(1) @ self.proj)
        return f, f @ self.cls


def image_metrics(rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """FID / KID of 300 and IS of 300 samples in 5 batches of 64 (uneven over 2 ranks: 2 + 3 batches)."""
    real = torch.randint(0, 256, (400, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ext = StandIn()
    protocol = ImageProtocol(extractor="standin", extractor_sha256=ext.sha256, dataset="toy", reference_split="train",
                             reference_size=400, reference_full=True, n_fid=300, n_is=300, image_size=8,
                             weights="final", is_splits=3, kid_subsets=10, kid_subset_size=100)
    real_features = ext(real)[0].double()
    sample = lambda n: torch.tanh(torch.randn(n, 3, 8, 8) + 0.3)  # noqa: E731  (RNG seeded per batch)
    return evaluate_images(sample, real_features, ext, protocol, 64, rank, world_size)[0]


def worker(out: Path) -> None:
    """Runs in each torchrun process: train every variant, write this rank's observations."""
    rank = int(os.environ["RANK"])
    for variant in VARIANTS:
        batch = IMAGE_BATCH if variant in IMAGE_CONFIGS else PER_DEVICE_BATCH
        cli, losses = train(variant, out / variant, devices=2, batch=batch)
        sync = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "RankSyncCheck")
        with torch.random.fork_rng():  # this rank's latent stream, as training left it
            z = cli.model.sample_z(4)
        record = {"losses": losses, "checks": sync.checks, "compared": sync.names, "params": _digest(cli.model),
                  "z": z.tolist(), "global_step": cli.trainer.global_step}
        (out / variant / f"rank{rank}.json").write_text(json.dumps(record))
    # exact resume under DDP: each rank's RNG stream comes back from the checkpoint
    full, _ = train("nsgan", out / "resume_full", devices=2, batch=PER_DEVICE_BATCH, save_every=5)
    resumed, _ = train("nsgan", out / "resume_half", devices=2, batch=PER_DEVICE_BATCH,
                       ckpt=out / "resume_full" / "ckpt" / "step=5.ckpt")
    (out / f"resume_rank{rank}.json").write_text(json.dumps([_digest(full.model), _digest(resumed.model)]))
    # the process group of the runs above is still up: image metrics with each rank drawing its share
    (out / f"metrics_rank{rank}.json").write_text(json.dumps(image_metrics(rank, int(os.environ["WORLD_SIZE"]))))
    # divergence under DDP: every rank stops at the same check (no rank left waiting in a collective)
    cli = ReproCLI(args=fit_args("nsgan", out / "blowup", 2, PER_DEVICE_BATCH) + [
        "--model.init_args.lr_g=1e12", "--model.init_args.lr_d=1e12", "--divergence.check_every_n_steps=5"])
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        stopped = None
    except TrainingDiverged:
        stopped = cli.trainer.global_step
    (out / f"blowup_rank{rank}.json").write_text(json.dumps(stopped))
    # leave together: a rank that exits while the other still holds gloo connections can abort it (SIGABRT)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    proc = subprocess.Popen(cmd, env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        _, err = proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    assert "unused parameters" not in err
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_under_ddp_with_identical_ranks(variant: str, ddp_runs: Path) -> None:
    r0, r1 = (json.loads((ddp_runs / variant / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["global_step"] == r1["global_step"] == STEPS
    # checked inside the run after every step: all parameters and non-BN buffers bit-identical
    assert r0["checks"] == r1["checks"] == STEPS
    assert r0["params"] == r1["params"]  # and G / D parameters after the run
    for rec in (r0, r1):
        assert len(rec["losses"]) == STEPS and all(math.isfinite(v) for pair in rec["losses"] for v in pair)
    assert r0["z"] != r1["z"], "both ranks draw the same latents"
    assert r0["losses"] != r1["losses"], "ranks saw the same batches and latents"
    if variant == "vbn":  # no running statistics: the fixed reference latents must agree instead
        assert any(n.endswith("reference_z") for n in r0["compared"]), "VBN reference batch was not compared"
    else:
        assert any(n.endswith("running_mean") for n in r0["compared"]), "G's BN statistics were not compared"
    if variant == "historical_averaging":  # both players' running parameter means
        assert sum(n.startswith("regularizer_state.") and n.endswith("average") for n in r0["compared"]) == 2
    if variant == "sngan":
        assert any(n.endswith(".u") for n in r0["compared"]), "SN u buffers were not compared"
    if variant == "sagan":  # SN in G as well as D
        assert any(n.startswith("generator.") and n.endswith(".u") for n in r0["compared"]), "G's SN u not compared"
    if variant in ("nsgan", "biggan"):
        assert any(n.startswith("generator_ema.") for n in r0["compared"]), "EMA weights were not compared"
    metrics = json.loads(next((ddp_runs / variant).rglob("metrics.json")).read_text())
    assert metrics["status"] == "finished" and metrics["generator_steps"] == STEPS


def test_image_metrics_over_two_ranks_equal_one_process(ddp_runs: Path) -> None:
    """2 ranks drawing and embedding 2 + 3 of the 5 sample batches (gathered to rank 0 in batch order)
    give the FID / KID / IS one process gets from all 5 batches: nothing duplicated, nothing dropped."""
    single = image_metrics()
    r0, r1 = (json.loads((ddp_runs / f"metrics_rank{r}.json").read_text()) for r in (0, 1))
    assert r1 == {} and set(r0) == set(single) and len(single) == 5  # rank 0 reports
    for name, value in single.items():
        assert r0[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
    assert single["fid300_train_standin"] > 0.01  # a real distance, not a degenerate 0 = 0


def test_divergence_under_ddp_stops_every_rank(ddp_runs: Path) -> None:
    stopped = [json.loads((ddp_runs / f"blowup_rank{r}.json").read_text()) for r in (0, 1)]
    assert stopped == [5, 5]
    record = json.loads(next((ddp_runs / "blowup").rglob("metrics.json")).read_text())
    assert record["status"] == "diverged" and record["diverged_at_step"] == 1


def test_resume_under_ddp_is_exact(ddp_runs: Path) -> None:
    """10 steps vs 5 + resume + 5 with 2 ranks: the checkpoint holds every rank's RNG state."""
    (full0, resumed0), (full1, resumed1) = (json.loads((ddp_runs / f"resume_rank{r}.json").read_text()) for r in (0, 1))
    assert full0 == resumed0 == full1 == resumed1


def test_one_and_two_processes_agree(ddp_runs: Path, run_dir: Path) -> None:
    """Same seed and global batch (1 x 64 vs 2 x 32): the first 10 steps' losses agree within 0.05 on
    average. They cannot agree exactly: each rank draws its own latents and its own half of the data
    order, and G's batch norm uses per-device statistics (32 samples instead of 64)."""
    _, single = train("nsgan", run_dir / "single", devices=1, batch=2 * PER_DEVICE_BATCH)
    two = [json.loads((ddp_runs / "nsgan" / f"rank{r}.json").read_text())["losses"] for r in (0, 1)]
    for k in (0, 1):  # d_loss, g_loss; the 2-process loss is the mean of the ranks' losses
        one = torch.tensor([s[k] for s in single])
        both = torch.tensor([(a[k] + b[k]) / 2 for a, b in zip(*two)])
        assert (one - both).abs().mean() < 0.05, (one, both)


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(Path(sys.argv[1]))

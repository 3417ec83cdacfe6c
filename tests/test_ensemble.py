"""Seed ensembles (issue 20, part 1): member k of ``repro fit --ensemble K --seed_everything s`` is the run
``repro fit --seed_everything s+k``.

Equivalence is checked in float64 after 100 generator updates on small nets (ring8 MLPs of width 16,
batch 32: nets this small keep the default suite fast; at B*width < 400 PyTorch's batched matmul switches
to a naive kernel that rounds differently from ``nn.Linear`` by 1e-16, which is why the batch is 32):
every parameter and buffer (BN statistics, SN u / v, EMA weights, TAN's lens) within 1e-10 of the
single run's, the logged losses of every step within 1e-10, and ``metrics.json``'s metrics equal.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from conftest import default_dtype
from lightning.pytorch.callbacks import ModelCheckpoint

from repro import REPO_ROOT
from repro.errors import UserError
from repro.fit import build_cli, run_fit
from repro.ensemble import EnsembleError, make_ensemble
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.regularizers import OrthonormalRegularizer
from repro.variants import NSGAN, VARIANTS

TOL = 1e-10
SMALL = ["--model.init_args.generator.init_args.width", "16", "--model.init_args.discriminator.init_args.width", "16",
         "--data.batch_size", "32", "--data.num_samples", "1024"]
# variant config and extra arguments: the contract's list (NS-GAN with a BN generator and EMA, WGAN-GP's
# double backward, SN-GAN's power-iteration buffers, Jacobian clamping, TAN's lens, GN-GAN)
CASES: dict[str, tuple[str, list[str]]] = {
    "nsgan-bn-ema": ("ring8/nsgan", ["--model.init_args.ema_decay", "0.9"]),
    "wgangp": ("ring8/wgangp", []),
    "wgangp-shared-z": ("ring8/wgangp", ["--model.init_args.updates", "shared_z"]),  # G step on the last D step's z
    "sngan": ("ring8/sngan", []),
    "jcgan": ("ring8/jcgan", []),
    "tan": ("ring8/tan", ["--model.init_args.temper_steps", "60"]),  # the lens is removed mid-run
    "gngan": ("ring8/gngan", []),
    "rasgan": ("ring8/rasgan", []),  # G's loss compares with D's output on the real batch
    "rsgan": ("ring8/rsgan", []),  # real and fake outputs paired one to one
    "ralsgan-paper": ("ring8/ralsgan", ["--model.init_args.paper_era", "true"]),
}
# the regularizer terms a case logs, each compared per member with the single run's like the losses
TERMS = {"wgangp": {"train/d_reg/gradient_penalty"}, "jcgan": {"train/g_reg/jacobian_clamping"}}


@pytest.fixture()
def float64() -> Iterator[None]:
    """float64 as torch's default dtype for this test only (restored after it, also when it fails)."""
    with default_dtype(torch.float64):
        yield


def _logger(folder: Path) -> list[str]:
    spec = {"class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(folder), "name": "", "version": ""}}
    return ["--trainer.logger", json.dumps(spec)]


def _args(config: str, steps: int, extra: list[str]) -> list[str]:
    return ["--config", f"configs/{config}.yaml", "--trainer.max_steps", str(steps), "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--samples.every_n_steps", "0", *extra]


def _losses(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def assert_members_equal_single_runs(ens: Any, root: Path, args: list[str], seeds: list[int], tol: float,
                                     terms: frozenset[str] = frozenset()) -> None:
    """Run each seed alone and compare its state, logged losses (and the regularizer ``terms``, which both must
    log) and metrics with the ensemble member's."""
    stacked = ens.model.state_dict()
    for i, seed in enumerate(seeds):
        single = run_fit([*args, "--seed_everything", str(seed), *_logger(root / f"single{seed}")])
        for key, value in single.model.state_dict().items():
            mine = stacked[key] if stacked[key].shape == value.shape else stacked[key][i]
            if value.is_floating_point():
                assert (mine - value).abs().max().item() <= tol, (seed, key)
            else:
                assert torch.equal(mine, value), (seed, key)
        rows, expected = _losses(root / "ens" / f"seed{seed}" / "metrics.csv"), _losses(root / f"single{seed}" / "metrics.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in expected] and len(rows) > 1
        assert all(row[key] and ref[key] for row, ref in zip(rows, expected) if ref["train/d_loss"] for key in terms)
        for row, ref in zip(rows, expected):
            for key, value in ref.items():
                if key.startswith("train/") and value:
                    assert abs(float(row[key]) - float(value)) <= tol, (seed, row["step"], key)
        record = json.loads((root / "ens" / f"seed{seed}" / "metrics.json").read_text())
        ref = json.loads((root / f"single{seed}" / "metrics.json").read_text())
        assert record["status"] == ref["status"] == "finished"
        assert record.get("metrics") == ref.get("metrics") and record["generator_steps"] == ref["generator_steps"]


# the relativistic family's G step reads the real batch alike: rsgan's case covers that path in the default suite
RELATIVISTIC_TWINS = ("rasgan", "ralsgan-paper")


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.slow("another relativistic loss; the rsgan case covers the ensemble's "
                                              "real-batch path") if case in RELATIVISTIC_TWINS else ())
    for case in CASES])
def test_members_equal_single_runs_float64(case: str, run_dir: Path, float64: None) -> None:
    config, extra = CASES[case]
    args = _args(config, 100, [*SMALL, *extra])
    ens = run_fit([*args, "--ensemble", "2", "--seed_everything", "3", *_logger(run_dir / "ens")])
    assert type(ens.model).__name__.startswith("Ensemble") and ens.model.members == 2
    assert_members_equal_single_runs(ens, run_dir, args, [3, 4], TOL, frozenset(TERMS.get(case, ())))


def test_metz_conv_nets_equal_single_runs(run_dir: Path, mnist_root: Path) -> None:
    """The stacked-MNIST nets (convolutions, transposed convolutions, 2-D batch norm) in float64, evaluated as the
    table evaluates them: G's batch-norm statistics re-estimated at each evaluation (a member's are views of the
    ensemble's buffers) and put back for training, at a curve point and at the end; the table's shared_z updates."""
    extra = ["--data.dataset", "stacked-mnist", "--data.data_root", str(mnist_root), "--data.num_samples", "256",
             "--data.batch_size", "16", "--trainer.precision", "64-true", "--evaluation.bn_standing_batches", "3",
             "--evaluation.image_metrics", "true", "--evaluation.n_stacked", "200", "--evaluation.curve_points", "2",
             "--model.init_args.generator", str(REPO_ROOT / "configs/nets/metz_g.yaml"),
             "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/metz_d_quarter.yaml"),
             "--model.init_args.updates", "shared_z"]
    args = _args("ring8/nsgan", 10, extra)
    ens = run_fit([*args, "--ensemble", "2", "--seed_everything", "0", *_logger(run_dir / "ens")])
    assert_members_equal_single_runs(ens, run_dir, args, [0, 1], TOL)
    assert (run_dir / "ens" / "seed1" / "samples" / "final.png").is_file()
    record = json.loads((run_dir / "ens" / "seed1" / "metrics.json").read_text())
    assert record["protocols"] and all("over 3 batches of 16" in p["bn_statistics"] for p in record["protocols"].values())
    assert len(next(iter(record["curves"].values()))) == 2


def test_dcgan_nets_equal_single_runs(run_dir: Path, mnist_root: Path) -> None:
    """configs/mnist/dcgan.yaml (transposed conv from a 1x1 map, BN in G and D, a bias-free D) in float64."""
    extra = ["--data.data_root", str(mnist_root), "--data.num_samples", "256", "--data.batch_size", "16",
             "--trainer.precision", "64-true", "--model.init_args.generator.init_args.width", "8",
             "--model.init_args.discriminator.init_args.width", "8"]
    args = _args("mnist/dcgan", 6, extra)
    ens = run_fit([*args, "--ensemble", "2", "--seed_everything", "0", *_logger(run_dir / "ens")])
    assert_members_equal_single_runs(ens, run_dir, args, [0, 1], TOL)


def test_pacgan_maxout_nets_equal_single_runs(run_dir: Path, float64: None) -> None:
    extra = ["--model.init_args.generator", str(REPO_ROOT / "configs/nets/pacgan_g.yaml"),
             "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/pacgan_d.yaml"),
             "--data.batch_size", "32", "--data.num_samples", "1024"]
    args = _args("ring8/sngan", 20, extra)
    ens = run_fit([*args, "--ensemble", "2", "--seed_everything", "0", *_logger(run_dir / "ens")])
    assert_members_equal_single_runs(ens, run_dir, args, [0, 1], TOL)


def test_member_folders_and_config(run_dir: Path) -> None:
    """Each member's folder has what a single run writes, and its config.yaml re-runs that member alone."""
    pattern = str(run_dir / "out" / "s{seed}")
    cli = run_fit([*_args("ring8/nsgan", 3, SMALL), "--ensemble", "3", "--seed_everything", "5",
                   "--ensemble.run_dirs", pattern, *_logger(run_dir / "ens")])
    for seed in (5, 6, 7):
        folder = run_dir / "out" / f"s{seed}"
        assert {"metrics.json", "metrics.csv", "config.yaml"} <= {p.name for p in folder.iterdir()}
        assert (folder / "samples" / "final.png").is_file()
        config = build_cli(["--config", str(folder / "config.yaml")]).config
        assert config["seed_everything"] == seed and config["ensemble"]["size"] is None
        assert config["trainer"]["logger"]["init_args"]["save_dir"] == str(folder)
    assert (run_dir / "ens" / "config.yaml").is_file() and cli.model.seeds == [5, 6, 7]


def test_ensemble_resumes_exactly(run_dir: Path) -> None:
    """20 steps straight == resume from the straight run's step-10 checkpoint (as a killed run leaves it) to 20:
    bitwise in every stacked tensor, and equal member records (WGAN-GP: n_dis = 5 latent and penalty draws
    from each member's own stream, linear lr decay)."""
    args = [*_args("ring8/wgangp", 20, SMALL), "--ensemble", "2"]
    straight = build_cli([*args, *_logger(run_dir / "a")])
    straight.trainer.callbacks.append(ModelCheckpoint(dirpath=run_dir / "ckpt", every_n_train_steps=10,
                                                      save_top_k=-1, filename="{step}"))
    straight.trainer.fit(straight.model, datamodule=straight.datamodule)
    resumed = run_fit([*args, "--ckpt_path", str(run_dir / "ckpt" / "step=10.ckpt"), *_logger(run_dir / "b")])
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for seed in (0, 1):
        ra = json.loads((run_dir / "a" / f"seed{seed}" / "metrics.json").read_text())
        rb = json.loads((run_dir / "b" / f"seed{seed}" / "metrics.json").read_text())
        assert ra["metrics"] == rb["metrics"] and rb["generator_steps"] == 20


def test_checkpoint_of_other_seeds_is_refused(run_dir: Path) -> None:
    args = _args("ring8/nsgan", 2, [*SMALL, "--trainer.enable_checkpointing", "true", "--ensemble", "2"])
    run_fit([*args, *_logger(run_dir / "a")])
    (ckpt,) = (run_dir / "a" / "checkpoints").glob("*.ckpt")
    with pytest.raises(EnsembleError, match=r"not of an ensemble of seeds \[7, 8\]"):
        run_fit([*args, "--seed_everything", "7", "--ckpt_path", str(ckpt), *_logger(run_dir / "b")])


@pytest.mark.parametrize("extra, message", [
    (["--model.init_args.d_regularizers", '[{"class_path": "repro.regularizers.OrthonormalRegularizer"}]'],
     "OrthonormalRegularizer is not supported"),
    (["--model.init_args.compile_nets", "true"], "compile_nets"),
    (["--model.init_args.channels_last", "true"], "channels_last"),
    (["--trainer.devices", "2"], "one device"),
    (["--ensemble.run_dirs", '["a", "b", "c"]'], "lists 3 folders"),
    (["--ensemble.run_dirs", "fixed_folder"], "pattern containing {seed}"),
])
def test_refusals_name_the_reason(extra: list[str], message: str, run_dir: Path) -> None:
    with pytest.raises(UserError, match=message):
        build_cli([*_args("ring8/nsgan", 2, SMALL), "--ensemble", "2", *extra])


class _Gain(torch.nn.Module):
    """A layer type with its own parameter and no ensemble version."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _GainGenerator(MLPGenerator):
    def __init__(self) -> None:
        super().__init__(width=8, depth=1)
        self.gain = _Gain()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gain(super().forward(z))


def test_layers_and_regularizers_without_ensemble_version_are_refused() -> None:
    rng = [torch.get_rng_state()] * 2
    models = [NSGAN(_GainGenerator(), MLPDiscriminator(width=8)) for _ in range(2)]
    with pytest.raises(EnsembleError, match=r"generator\.gain \(_Gain\) holds its own tensors \(scale\)"):
        make_ensemble(NSGAN(_GainGenerator(), MLPDiscriminator(width=8)), models, [0, 1], rng)
    models = [NSGAN(MLPGenerator(), MLPDiscriminator(), d_regularizers=[OrthonormalRegularizer()]) for _ in range(2)]
    with pytest.raises(EnsembleError, match="regularizer OrthonormalRegularizer is not supported"):
        make_ensemble(NSGAN(MLPGenerator(), MLPDiscriminator()), models, [0, 1], rng)


NETS = {
    "mlp": [],
    "pacgan": ["--model.init_args.generator", str(REPO_ROOT / "configs/nets/pacgan_g.yaml"),
               "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/pacgan_d.yaml")],
    "metz": ["--data.dataset", "stacked-mnist", "--data.num_samples", "64",
             "--model.init_args.generator", str(REPO_ROOT / "configs/nets/metz_g.yaml"),
             "--model.init_args.discriminator", str(REPO_ROOT / "configs/nets/metz_d_half.yaml")],
}
REFUSED = {"rfgan": "RFGAN", "wgants": "WGANTS", "xicfg": "XICFG",  # not checked against single runs (yet)
           # their G / D terms are batch means over the stacked members' samples
           "feature_matching": "FeatureMatchingGAN", "ssgan": "SSGAN", "biggan": "BigGAN",
           "sagan": "SAGAN"}  # not checked against single runs; its attention blocks have no stacked version yet
CONFIGS = {"relativistic": "ring8/ralsgan", "ssgan": "mnist/ssgan", "sagan": "mnist/sagan",
           "biggan": "mnist/biggan"}  # registered names without a ring8/<name>.yaml
CONDITIONAL = {"projection": "mnist/projection", "acgan": "mnist/acgan",  # labels: refused, on their own nets
               "s3gan": "mnist/s3gan", "s2gan": "mnist/s2gan"}
# class-conditional configs: the PacGAN / stacked-MNIST nets take no labels, so those runs train unconditionally
UNLABELLED = {"biggan": ["--model.init_args.num_classes", "null"]}
_CONV_LENS = '{"class_path": "repro.nets.lens.ConvLens", "init_args": {"channels": 3, "width": 4, "blocks": 1}}'


# variants that differ from NS-GAN only in their losses: on the PacGAN and stacked-MNIST nets they take NS-GAN's path
# through the stacked layers, so those cases run with REPRO_SLOW=1 (on the MLP nets always)
LOSS_ONLY = ("vanilla", "lsgan", "rasgan", "relativistic")


@pytest.mark.parametrize("variant,nets", [
    pytest.param(variant, nets, id=f"{variant}-{nets}", marks=pytest.mark.slow(
        "a loss-only variant on stacked nets; the nsgan case on the same nets covers the path")
        if nets != "mlp" and variant in LOSS_ONLY else ())
    for nets in NETS for variant in VARIANTS])
def test_every_variant_trains_as_ensemble_or_refuses(variant: str, nets: str, run_dir: Path, mnist_root: Path) -> None:
    """Every registered variant on the MLP, PacGAN and stacked-MNIST nets trains two steps as an ensemble
    whose member 1 started from the weights its seed builds, or refuses with one clear error (RFGAN; WGAN-TS
    and xICFG, which have not been checked against single runs).
    (GN-GAN, SN-GAN, WGAN-GP and WGAN-TS refuse a batch-normed D as single runs do: the stacked-MNIST D goes
    without BN.)"""
    extra = [*NETS[nets], "--data.data_root", str(mnist_root), "--data.batch_size", "8",
             "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", "--samples.every_n_steps", "0",
             *_logger(run_dir)]
    if nets == "metz" and variant in ("gngan", "sngan", "sagan", "wgangp", "wgants"):
        extra += ["--model.init_args.discriminator.init_args.batch_norm", "false"]
    if nets == "metz" and variant == "tan":
        extra += ["--model.init_args.lens", _CONV_LENS]
    if variant in CONDITIONAL:
        with pytest.raises(UserError, match="class-conditional training .*train its seeds separately"):
            build_cli(["--config", f"configs/{CONDITIONAL[variant]}.yaml", "--ensemble", "2", *extra[len(NETS[nets]):]])
        return
    config = ["--config", f"configs/{CONFIGS.get(variant, f'ring8/{variant}')}.yaml"]
    if variant in UNLABELLED and nets == "mlp":  # its labelled config on the MLP nets: the labels are refused first
        with pytest.raises(UserError, match="class-conditional training .*train its seeds separately"):
            build_cli([*config, "--ensemble", "2", *extra])
        return
    if nets != "mlp":
        extra += UNLABELLED.get(variant, [])
    if variant in REFUSED:
        with pytest.raises(UserError, match=f"{REFUSED[variant]} cannot run as a seed ensemble .*train its seeds separately"):
            build_cli([*config, "--ensemble", "2", *extra])
        return
    first_layer = next(iter(build_cli([*config, "--seed_everything", "5", *extra]).model.generator.state_dict().items()))
    cli = build_cli([*config, "--ensemble", "2", "--seed_everything", "4", *extra])
    assert torch.equal(cli.model.generator.state_dict()[first_layer[0]][1], first_layer[1])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    for seed in (4, 5):
        assert json.loads((run_dir / f"seed{seed}" / "metrics.json").read_text())["generator_steps"] == 2


def test_bench_step_timer_and_input_errors(run_dir: Path) -> None:
    """``repro bench ensemble``'s timing callback records steady-state steps and one step's FLOPs; bad input is
    refused before anything runs."""
    from repro.bench.ensemble import StepTimer, main

    cli = build_cli([*_args("ring8/nsgan", 6, SMALL), "--ensemble", "2", *_logger(run_dir)])
    cli.trainer.callbacks.append(StepTimer(str(run_dir / "timing.json"), warmup=2))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    timing = json.loads((run_dir / "timing.json").read_text())
    assert len(timing["step_seconds"]) == 4 and timing["flops_per_step"] > 2 * 32 * 16 * 16 * 2
    with pytest.raises(UserError, match="unknown nope"):
        main(["--workloads", "nope"])
    with pytest.raises(UserError, match="--steps >= --warmup"):
        main(["--steps", "3", "--warmup", "5"])


def test_bench_writes_each_row_with_its_load(tmp_path: Path) -> None:
    """The benchmark's record is rewritten after every (workload, K) row, each row with the load it ran under."""
    from repro.bench.ensemble import _write

    row = {"workload": "ring8", "members": 4, "ensemble_ms_per_update": 5.0, "separate_ms_per_update": 10.0,
           "speedup_steady": 2.0, "speedup_process": 1.5, "ensemble_peak_share": 0.1, "single_peak_share": 0.05,
           "load_average_1min": 3.25}
    _write(tmp_path, ["--workloads", "ring8"], {"peak_gflops_fp32_1thread": 80.0}, ["ring8"], "nsgan", [row], 0.0)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["summary"] == [row] and len(record["machine"]["load_average_end"]) == 3
    assert "| ring8 | 4 | 5.00 | 10.00 | 2.00x | 1.50x | 10.0 | 5.0 | 3.2 |" in (tmp_path / "table.md").read_text()

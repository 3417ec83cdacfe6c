"""Issue 17 on the fit side: a run is finished only at the length it was asked for, a diverged run leaves no
checkpoint of broken weights, resume checks what it restores, files of unknown origin are loaded weights-only,
and the numerical edge cases of IS and the conditioning number."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Unsafe
from repro import REPO_ROOT
from repro.checkpoints import UnsafeFileError, check_resume, safe_load
from repro.cli import main
from repro.fit import build_cli
from repro.data.images import load_images
from repro.data.loader import InMemoryBatches
from repro.metrics.conditioning import condition_numbers, generator_jacobian
from repro.metrics.features import FeatureExtractor
from repro.metrics.image import ImageProtocol, check_sample_counts, evaluate_images, reference_features
from repro.nets import MLPGenerator

RING = str(REPO_ROOT / "configs/ring8/nsgan.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--samples.every_n_steps", "0", "--evaluation.n_samples", "100"]


def _record(run_dir: Path) -> dict:
    return json.loads(next(run_dir.rglob("metrics.json")).read_text())


# ----------------------------------------------------------------------------- run length
def test_loader_consumed_by_count_starts_the_next_pass() -> None:
    """Lightning stops asking after len() batches, so the generator never reaches its end: the next
    iter() must start the next pass, not an empty one (which made max_epochs 4 train 2 passes)."""
    loader = InMemoryBatches(torch.arange(12.0)[:, None], batch_size=4, seed=0)
    passes = []
    for _ in range(3):
        it = iter(loader)
        passes.append(torch.cat([next(it) for _ in range(len(loader))]).flatten().tolist())
    assert all(sorted(p) == list(range(12)) for p in passes) and passes[0] != passes[1]
    assert loader.epoch == 2


def test_max_epochs_trains_that_many_passes(run_dir: Path) -> None:
    main(["fit", "--config", RING, "--trainer.max_steps=-1", "--trainer.max_epochs", "4", "--data.num_samples", "768",
          "--model.init_args.lr_decay", "none", *QUIET])
    record = _record(run_dir)
    assert record["status"] == "finished"
    assert record["generator_steps"] == record["steps_asked"] == 4 * (768 // 256)


def test_run_stopped_by_max_time_is_not_finished(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["fit", "--config", RING, "--trainer.max_steps", "100000", "--trainer.max_time", "00:00:00:01", *QUIET])
    record = _record(run_dir)  # 100,000 steps take minutes: the one-second limit stops the run long before
    assert record["status"] == "stopped" and record["steps_asked"] == 100_000
    assert 0 < record["generator_steps"] < 100_000
    assert "max_time" in record["stop_reason"] and "of 100000" in record["stop_reason"]
    assert "recorded as status 'stopped'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- divergence
def test_diverged_run_leaves_no_checkpoint_of_broken_weights(run_dir: Path) -> None:
    """3 steps per epoch, checks every 5 steps: the epoch-end checkpoint at step 3 falls between two
    checks. The check before saving stops the run there instead of writing NaN weights."""
    with pytest.raises(SystemExit):
        main(["fit", "--config", RING, "--trainer.max_steps", "12", "--data.num_samples", "768",
              "--divergence.check_every_n_steps", "5", "--model.init_args.lr_g=1e12", "--model.init_args.lr_d=1e12",
              *QUIET])
    record = _record(run_dir)
    assert record["status"] == "diverged" and record["generator_steps"] == 3
    for ckpt in run_dir.rglob("*.ckpt"):
        weights = torch.load(ckpt, weights_only=True)["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), ckpt


# ----------------------------------------------------------------------------- resume and unsafe files
def test_unsafe_files_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Unsafe(marker)}, evil)
    with pytest.raises(UnsafeFileError, match="would import io.open"):
        safe_load(evil, "ckpt_path")
    assert not marker.exists()
    # a poisoned reference-feature cache is refused the same way, before anything is extracted
    class Tiny(FeatureExtractor):
        name, num_features, sha256 = "tiny", 2, "0" * 64

    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    torch.save(Unsafe(marker), tmp_path / f"set_{digest}_tiny_{'0' * 16}.pt")
    with pytest.raises(UnsafeFileError, match="evaluation.cache_dir"):
        reference_features(images, Tiny(), "set", cache_dir=tmp_path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def ring_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    main(["fit", "--config", RING, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(out),
          "--trainer.logger.init_args.save_dir", str(out), *QUIET])
    return next(out.rglob("*.ckpt"))


def test_checkpoint_carries_the_run_config(ring_ckpt: Path) -> None:
    stamp = torch.load(ring_ckpt, weights_only=True)["repro_config"]
    assert stamp["model"]["class_path"] == "repro.variants.NSGAN"
    assert stamp["model"]["init_args"]["generator"]["init_args"]["width"] == 128
    assert stamp["data"]["dataset"] == "ring8"


def test_resume_allows_moving_the_data_and_refuses_other_settings(ring_ckpt: Path, run_dir: Path) -> None:
    cli = build_cli(["--config", RING, "--data.data_root", str(run_dir), "--ckpt_path", str(ring_ckpt), *QUIET])
    assert cli.model.hparams.lr_g == 1e-3  # the same settings, data in another folder: accepted
    clamped = build_cli(["--config", RING, *QUIET, "--model.init_args.g_regularizers",
                         '[{"class_path": "repro.regularizers.JacobianClamping"}]'])
    with pytest.raises(ValueError, match=r"model.init_args.g_regularizers.*-> \[\{"):  # absent from the hparams
        check_resume(ring_ckpt, clamped.model, clamped.config.as_dict())


def test_resume_accepts_an_argument_added_since_only_at_its_default(ring_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint written before ``ema_start`` (a variant's argument) or ``Init.conv_truncation`` (a field of a
    net's dataclass argument) existed resumes when the config leaves them at their defaults, not otherwise."""
    older = torch.load(ring_ckpt, weights_only=True)
    del older["repro_config"]["model"]["init_args"]["ema_start"]
    del older["repro_config"]["model"]["init_args"]["generator"]["init_args"]["init"]["conv_truncation"]
    torch.save(older, tmp_path / "older.ckpt")
    cli = build_cli(["--config", RING, *QUIET])
    assert cli.config.as_dict()["model"]["init_args"]["ema_start"] == 0  # the default, as the old code behaved
    check_resume(tmp_path / "older.ckpt", cli.model, cli.config.as_dict())
    other = build_cli(["--config", RING, "--model.init_args.ema_start", "5", *QUIET])
    with pytest.raises(ValueError, match=r"model.init_args.ema_start \(unset\) -> 5"):
        check_resume(tmp_path / "older.ckpt", other.model, other.config.as_dict())
    truncated = build_cli(["--config", RING, *QUIET, "--model.init_args.generator.init_args.init",
                           '{"scheme": "normal", "conv_truncation": 2.0}'])
    with pytest.raises(ValueError, match=r"init.conv_truncation \(unset\) -> 2.0"):
        check_resume(tmp_path / "older.ckpt", truncated.model, truncated.config.as_dict())


def test_checkpoint_without_config_stamp_is_checked_by_its_hyper_parameters(ring_ckpt: Path, tmp_path: Path) -> None:
    legacy = torch.load(ring_ckpt, weights_only=True)
    del legacy["repro_config"]
    torch.save(legacy, tmp_path / "legacy.ckpt")
    cli = build_cli(["--config", RING, *QUIET])
    check_resume(tmp_path / "legacy.ckpt", cli.model, cli.config.as_dict())  # same settings
    other = build_cli(["--config", RING, "--model.init_args.n_dis", "3", *QUIET])
    with pytest.raises(ValueError, match=r"model.n_dis 1 -> 3"):
        check_resume(tmp_path / "legacy.ckpt", other.model, other.config.as_dict())


# ----------------------------------------------------------------------------- IS, FID sample counts, conditioning
def test_inception_score_std_is_the_population_std_over_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """IS mean and std against an independent NumPy computation over the same 10 splits (ddof 0,
    Salimans et al. 2016 / torch-fidelity); the shuffle before splitting is made the identity."""
    n, k, d = 200, 10, 6
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(n, 5, generator=gen, dtype=torch.float64) * 3
    feats = torch.randn(n, d, generator=gen, dtype=torch.float64)

    class Given(FeatureExtractor):
        name, num_features, sha256 = "given", d, "0" * 64

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.i = 0

        def forward(self, images):
            out = feats[self.i: self.i + len(images)], logits[self.i: self.i + len(images)]
            self.i += len(images)
            return out

    proto = ImageProtocol(extractor="given", extractor_sha256="0", dataset="x", reference_split="train",
                          reference_size=n, reference_full=True, n_fid=n, n_is=n, image_size=2, weights="final", seed=5)
    monkeypatch.setattr(torch, "randperm", lambda m, *args, **kwargs: torch.arange(m))
    values, protocols = evaluate_images(lambda m: torch.zeros(m, 1, 2, 2), feats, Given(), proto, batch_size=n)
    p = np.exp(logits.numpy())
    p /= p.sum(1, keepdims=True)
    scores = [np.exp(np.mean(np.sum(s * (np.log(s) - np.log(s.mean(0))), 1))) for s in np.split(p, k)]
    assert values["is200_given"] == pytest.approx(np.mean(scores), rel=1e-9)
    assert values["is200_given_std"] == pytest.approx(np.std(scores, ddof=0), rel=1e-9)
    assert protocols["is200_given_std"]["is_std_ddof"] == 0


def test_sample_counts_below_the_statistic_are_refused() -> None:
    check_sample_counts(129, 20, 129, 128, "classifier")
    with pytest.raises(ValueError, match="n_fid"):
        check_sample_counts(128, 20, 1000, 128, "classifier")
    with pytest.raises(ValueError, match="reference set"):
        check_sample_counts(1000, 20, 128, 128, "classifier")
    with pytest.raises(ValueError, match="n_is"):
        check_sample_counts(1000, 19, 1000, 128, "classifier")


def test_condition_number_is_infinite_when_the_latent_exceeds_the_output() -> None:
    g = MLPGenerator(z_dim=16, out_dim=4, width=32, depth=2, batch_norm=False)
    jac = generator_jacobian(g, torch.randn(3, 16))
    assert jac.shape == (3, 4, 16)
    assert torch.isinf(condition_numbers(jac)).all()
    eig = np.linalg.eigvalsh(jac[0].double().T.numpy() @ jac[0].double().numpy())  # J^T J, 16 x 16, rank 4
    assert (np.abs(eig) < 1e-10 * eig.max()).sum() == 12  # singular, as the inf says
    square = generator_jacobian(MLPGenerator(z_dim=4, out_dim=4, width=32, depth=2, batch_norm=False), torch.randn(2, 4))
    ev = np.linalg.eigvalsh(square[0].double().T.numpy() @ square[0].double().numpy())
    assert condition_numbers(square)[0].item() == pytest.approx(ev.max() / ev.min(), rel=1e-6)


def test_mixed_image_sizes_load_when_image_size_is_set(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "c").mkdir()
    for i, size in enumerate([(28, 28), (40, 30), (16, 16)]):
        Image.new("RGB", size, (50 * i, 0, 0)).save(tmp_path / "c" / f"{i}.png")
    images, _ = load_images("image_folder", tmp_path, download=False, image_size=24)
    assert images.shape == (3, 3, 24, 24) and images.dtype == torch.uint8
    assert math.isclose(float(images[1, 0].float().mean()), 50.0, abs_tol=1.0)


def _evaluation_defaults() -> dict[str, object]:
    import inspect

    from repro.callbacks import FinalEvaluation
    return {f"evaluation.{k}": p.default for k, p in inspect.signature(FinalEvaluation).parameters.items()}


def test_resume_refuses_other_evaluation_settings_but_not_another_curve_schedule(ring_ckpt: Path, tmp_path: Path) -> None:
    """The curve points a checkpoint holds were measured with its evaluation settings: a resumed run measuring the
    rest otherwise would draw one curve from two protocols. When the points fall may change."""
    stamp = torch.load(ring_ckpt, weights_only=True)["repro_config"]
    assert stamp["evaluation"]["bn_standing_batches"] == 0
    defaults = _evaluation_defaults()
    rescheduled = build_cli(["--config", RING, "--evaluation.curve_points", "7", "--evaluation.tail_points", "3", *QUIET])
    check_resume(ring_ckpt, rescheduled.model, rescheduled.config.as_dict(), defaults)
    standing = build_cli(["--config", RING, "--evaluation.bn_standing_batches", "50", *QUIET])
    with pytest.raises(ValueError, match=r"evaluation.bn_standing_batches 0 -> 50"):
        check_resume(ring_ckpt, standing.model, standing.config.as_dict(), defaults)
    older = torch.load(ring_ckpt, weights_only=True)  # written before bn_standing_batches existed
    del older["repro_config"]["evaluation"]["bn_standing_batches"]
    torch.save(older, tmp_path / "older.ckpt")
    check_resume(tmp_path / "older.ckpt", build_cli(["--config", RING, *QUIET]).model,
                 build_cli(["--config", RING, *QUIET]).config.as_dict(), defaults)
    with pytest.raises(ValueError, match=r"evaluation.bn_standing_batches \(unset\) -> 50"):
        check_resume(tmp_path / "older.ckpt", standing.model, standing.config.as_dict(), defaults)
    del older["repro_config"]["evaluation"]  # written before evaluation settings were stamped: not compared
    torch.save(older, tmp_path / "oldest.ckpt")
    check_resume(tmp_path / "oldest.ckpt", standing.model, standing.config.as_dict(), defaults)

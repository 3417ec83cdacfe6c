"""Bad input (issue 8): each case goes through ``repro.cli.main`` and must give a non-zero exit and one
line ``repro fit: error: ...`` naming the offending key (and, for names, the valid options), with no
traceback and before any training step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repro import REPO_ROOT
from repro.cli import main

RING = "configs/ring8/nsgan.yaml"
MNIST = "configs/mnist/nsgan.yaml"
MISSING_DIR = "<tmp>/empty"  # placeholders filled in by the `bad_files` fixture
A_FILE = "<tmp>/a_file"


# id: (config, extra args, substrings the message must contain)
CASES = [
    pytest.param(RING, ["--model.class_path", "repro.variants.NoSuchGAN"], ["model", "NoSuchGAN", "repro.variants.NSGAN"],
                 id="unknown-variant"),
    pytest.param(RING, ["--model.class_path", "repro.variants.GANModule", "--model.init_args.loss", "bogus"],
                 ["loss", "bogus", "nonsaturating"], id="unknown-loss"),
    pytest.param("configs/ring8/lsgan.yaml", ["--model.init_args.loss_args", '{"q": 1.0}'], ["loss", "q"],
                 id="loss-args-foreign-to-loss"),
    pytest.param(RING, ["--model.init_args.discriminator.init_args.norm", "bogus"], ["normalization", "bogus", "none"],
                 id="unknown-normalization"),
    pytest.param(RING, ["--data.dataset", "bogus"], ["dataset", "bogus", "ring8", "mnist"], id="unknown-dataset"),
    pytest.param(RING, ["--model.init_args.optimizer", "sgd"], ["optimizer", "sgd", "adam", "rmsprop"],
                 id="unknown-optimizer"),
    pytest.param(RING, ["--model.init_args.no_such_option", "1"], ["no_such_option"], id="unknown-option"),
    pytest.param(RING, ["--trainer.max_steps", "many"], ["trainer.max_steps", "many"], id="wrong-type"),
    pytest.param(RING, ["--model.init_args.betas_d", "[0.5]"], ["betas_d"], id="betas-wrong-length"),
    pytest.param(RING, ["--model.init_args.n_dis", "0"], ["n_dis"], id="n_dis-below-1"),
    pytest.param(RING, ["--model.init_args.lr_d=-1e-4"], ["lr_d"], id="negative-lr"),
    pytest.param(RING, ["--model.init_args.ema_decay", "1.5"], ["ema_decay"], id="ema-decay-out-of-range"),
    pytest.param(RING, ["--model.init_args.lr_decay", "linear", "--trainer.max_steps=-1"],
                 ["lr_decay", "max_steps"], id="lr-decay-without-step-budget"),
    pytest.param(RING, ["--data.batch_size", "0"], ["batch_size"], id="batch-size-0"),
    pytest.param(RING, ["--data.num_samples", "10"], ["num_samples", "batch_size"], id="fewer-samples-than-batch"),
    pytest.param(RING, ["--model.init_args.generator.init_args.out_dim", "3"], ["model.generator", "out_dim"],
                 id="generator-output-not-data-shape"),
    pytest.param(RING, ["--model.init_args.discriminator.init_args.in_dim", "3"], ["model.discriminator", "in_dim"],
                 id="discriminator-input-not-data-shape"),
    pytest.param(MNIST, ["--model.init_args.generator.init_args.image_size", "30"], ["image_size", "30"],
                 id="image-size-not-for-architecture"),
    pytest.param(MNIST, ["--model.init_args.discriminator.init_args.image_size", "32"],
                 ["model.discriminator", "image_size", "(1, 28, 28)"], id="discriminator-built-for-other-size"),
    pytest.param(MNIST, ["--data.data_root", A_FILE], ["data.data_root", "not a directory"], id="data-root-is-a-file"),
    pytest.param(MNIST, ["--data.data_root", MISSING_DIR, "--data.download", "false"], ["mnist", "data.data_root"],
                 id="data-not-under-root"),
    pytest.param("configs/ring8/wgan.yaml", ["--model.init_args.clip", "0"], ["clip"], id="wgan-clip-0"),
    pytest.param(RING, ["--divergence.check_every_n_steps", "-1"], ["divergence.check_every_n_steps"],
                 id="negative-check-interval"),
    pytest.param("configs/ring8/no_such_config.yaml", [], ["config", "no_such_config.yaml"], id="missing-config"),
    pytest.param(RING, ["--ckpt_path", "<tmp>/none.ckpt"], ["ckpt_path", "not a file"], id="ckpt-missing"),
    pytest.param(RING, ["--ckpt_path", "<tmp>/corrupt.ckpt"], ["ckpt_path", "corrupt"], id="ckpt-corrupt"),
    pytest.param(RING, ["--ckpt_path", "<tmp>/foreign.ckpt"], ["ckpt_path", "not written by"], id="ckpt-foreign"),
    pytest.param(RING, ["--ckpt_path", "<tmp>/other_model.ckpt"], ["ckpt_path", "different model"],
                 id="ckpt-of-another-model"),
    pytest.param("configs/ring8/sngan.yaml", ["--model.init_args.discriminator.init_args.norm", "batch"],
                 ["model.discriminator", "batch norm"], id="sngan-with-batch-norm"),
    pytest.param("configs/ring8/gngan.yaml", ["--model.init_args.discriminator.init_args.norm", "batch"],
                 ["model.discriminator", "GNGAN", "batch norm"], id="gngan-with-batch-norm"),
    pytest.param("configs/ring8/gngan.yaml", ["--model.init_args.discriminator.init_args.norm", "spectral"],
                 ["model.discriminator", "GNGAN", "spectral norm"], id="gngan-with-spectral-norm"),
]


@pytest.fixture()
def bad_files(run_dir: Path) -> Path:
    (run_dir / "empty").mkdir()
    (run_dir / "a_file").write_text("not a folder")
    (run_dir / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated mid-write")
    torch.save({"weights": torch.zeros(3)}, run_dir / "foreign.ckpt")
    torch.save({"state_dict": {"net.weight": torch.zeros(3)}, "repro_rng": {}}, run_dir / "other_model.ckpt")
    return run_dir


@pytest.mark.parametrize(("config", "extra", "expected"), CASES)
def test_bad_input_is_one_clear_error(config: str, extra: list[str], expected: list[str], bad_files: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("<tmp>", str(bad_files)) for a in extra]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", config, "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false", *args])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    messages = [ln for ln in err.splitlines() if ln.startswith("repro fit: error:")]
    assert len(messages) == 1, err
    for word in expected:
        assert word in messages[0], f"{word!r} not in: {messages[0]}"
    assert not list(bad_files.glob("runs/**/*.ckpt")) and not list(bad_files.rglob("metrics.json")), "training ran"

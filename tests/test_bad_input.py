"""Bad input (issue 8): each case goes through ``repro.cli.main`` and must give a non-zero exit and one
line ``repro fit: error: ...`` naming the offending key (and, for names, the valid options), with no
traceback and before any training step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import Unsafe
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
    pytest.param(RING, ["--divergence.max_abs_loss", "0"], ["divergence.max_abs_loss", "> 0"], id="loss-bound-0"),
    pytest.param(RING, ["--divergence.max_abs_loss=-1e4"], ["divergence.max_abs_loss", "> 0"],
                 id="negative-loss-bound"),
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
    # issue 17: numbers outside their domain
    pytest.param(RING, ["--trainer.log_every_n_steps", "0"], ["trainer.log_every_n_steps", ">= 1"], id="log-every-0"),
    pytest.param(RING, ["--trainer.log_every_n_steps=-5"], ["trainer.log_every_n_steps"], id="log-every-negative"),
    pytest.param(RING, ["--trainer.max_steps", "0"], ["trainer.max_steps", ">= 1"], id="max-steps-0"),
    pytest.param(RING, ["--trainer.max_epochs", "0"], ["trainer.max_epochs", ">= 1"], id="max-epochs-0"),
    pytest.param(RING, ["--trainer.max_time", "bogus"], ["trainer", "DD:HH:MM:SS"], id="max-time-not-a-duration"),
    pytest.param(RING, ["--trainer.devices", "0"], ["trainer", "devices"], id="devices-0"),
    pytest.param(RING, ["--trainer.num_nodes", "0"], ["num_nodes"], id="num-nodes-0"),
    pytest.param(RING, ["--trainer.limit_train_batches", "0"], ["trainer.limit_train_batches"], id="limit-batches-0"),
    pytest.param(RING, ["--trainer.accumulate_grad_batches", "2"], ["trainer.accumulate_grad_batches", "batch_size"],
                 id="gradient-accumulation"),
    pytest.param(RING, ["--trainer.gradient_clip_val", "1.0"], ["trainer.gradient_clip_val", "clip"],
                 id="automatic-gradient-clipping"),
    pytest.param(RING, ["--model.init_args.betas_g", "[1.0, 0.999]"], ["model.betas_g", "[0, 1)"], id="beta1-is-1"),
    pytest.param(RING, ["--model.init_args.betas_d", "[-0.1, 0.9]"], ["model.betas_d", "[0, 1)"], id="beta-negative"),
    pytest.param(RING, ["--model.init_args.betas_g", "[0.5, 1.5]"], ["model.betas_g", "[0, 1)"], id="beta2-above-1"),
    pytest.param("configs/ring8/tan.yaml", ["--model.init_args.betas_lens", "[0.5, 1.0]"], ["model.betas_lens", "[0, 1)"],
                 id="lens-beta-out-of-range"),
    pytest.param(RING, ["--model.init_args.g_batch_size", "0"], ["model.g_batch_size", ">= 1"], id="g-batch-size-0"),
    pytest.param(RING, ["--model.init_args.n_fixed", "0"], ["model.n_fixed", ">= 1"], id="n-fixed-0"),
    pytest.param(RING, ["--samples.every_n_steps=-1"], ["samples.every_n_steps"], id="negative-sample-interval"),
    pytest.param(RING, ["--evaluation.n_samples", "0"], ["evaluation.n_samples", ">= 1"], id="no-evaluation-samples"),
    pytest.param(MNIST, ["--data.image_size", "0"], ["data.image_size", ">= 1"], id="image-size-0"),
    # degenerate network sizes
    pytest.param(RING, ["--model.init_args.generator.init_args.width", "0"], ["model.generator", "no units"],
                 id="generator-width-0"),
    pytest.param(RING, ["--model.init_args.discriminator.init_args.width", "0"], ["model.discriminator", "no units"],
                 id="discriminator-width-0"),
    pytest.param(RING, ["--model.init_args.generator.init_args.width=-3"], ["model.generator.init_args.width", ">= 0"],
                 id="generator-width-negative"),
    pytest.param(RING, ["--model.init_args.discriminator.init_args.depth=-1"],
                 ["model.discriminator.init_args.depth", ">= 0"], id="discriminator-depth-negative"),
    pytest.param(RING, ["--model.init_args.generator.init_args.z_dim", "0"], ["z_dim", ">= 1"], id="z-dim-0"),
    pytest.param(MNIST, ["--model.init_args.generator.init_args.width", "0"], ["model.generator", "no units"],
                 id="cnn-generator-width-0"),
    # data on disk that cannot be read
    pytest.param(MNIST, ["--data.data_root", "<tmp>/truncated_mnist"], ["mnist", "truncated or corrupt", "copy it again"],
                 id="truncated-mnist-file"),
    pytest.param(MNIST, ["--data.dataset", "image_folder", "--data.data_root", "<tmp>/unreadable_folder", *[
        "--model.init_args.generator.init_args.channels", "3", "--model.init_args.discriminator.init_args.channels", "3"]],
                 ["image_folder", "bad.png", "remove or replace"], id="unreadable-image-in-folder"),
    pytest.param(MNIST, ["--data.dataset", "image_folder", "--data.data_root", "<tmp>/mixed_folder", *[
        "--model.init_args.generator.init_args.channels", "3", "--model.init_args.discriminator.init_args.channels", "3"]],
                 ["image_folder", "28x28", "30x28", "data.image_size"], id="mixed-image-sizes"),
    # evaluation inputs and sample counts, before training
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.n_fid", "100"],
                 ["evaluation.n_fid", "128", ">= 129"], id="fid-samples-below-feature-dim"),
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.n_fid", "500", "--evaluation.n_is", "15"],
                 ["evaluation.n_is", ">= 20"], id="is-samples-below-splits"),
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.n_fid", "500", "--evaluation.n_is", "500",
                         "--evaluation.n_reference", "100"], ["reference set", "evaluation.n_reference"],
                 id="reference-below-feature-dim"),
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.extractor_weights", "<tmp>/none.pt"],
                 ["classifier", "not found", "train-classifier"], id="classifier-weights-missing"),
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.extractor", "inception",
                         "--evaluation.extractor_weights", "<tmp>/none.pth"],
                 ["evaluation.extractor_weights", "Inception", "does not exist"], id="inception-weights-missing"),
    pytest.param(MNIST, ["--evaluation.image_metrics", "true", "--evaluation.extractor_weights", "<tmp>/evil.ckpt"],
                 ["evaluation.extractor_weights", "refused"], id="classifier-weights-unsafe"),
    pytest.param(MNIST, ["--data.dataset", "digits", "--evaluation.image_metrics", "true",
                         "--evaluation.reference_split", "test", "--model.init_args.generator.init_args.image_size", "32",
                         "--model.init_args.discriminator.init_args.image_size", "32"],
                 ["evaluation.reference_split", "digits"], id="no-test-split"),
    pytest.param(MNIST, ["--data.dataset", "image_folder", "--data.data_root", "<tmp>/rgb_folder",
                         "--model.init_args.generator.init_args.channels", "3",
                         "--model.init_args.discriminator.init_args.channels", "3",
                         "--evaluation.image_metrics", "true", "--evaluation.extractor", "classifier"],
                 ["evaluation.extractor", "grey", "inception"], id="classifier-on-rgb-images"),
    pytest.param(RING, ["--model.init_args.generator.init_args.z_dim", "4", "--conditioning.every_n_steps", "0"],
                 ["conditioning", "z_dim 4", "singular"], id="conditioning-of-wide-latent"),
    # resuming: unsafe files and other settings
    pytest.param(RING, ["--ckpt_path", "<tmp>/evil.ckpt"], ["ckpt_path", "refused", "io.open", "nothing in it was run"], id="ckpt-unsafe-pickle"),
    pytest.param(RING, ["--ckpt_path", "<ckpt>", "--model.init_args.lr_g", "5e-4"],
                 ["ckpt_path", "other settings (model.init_args.lr_g 0.001 -> 0.0005)", "config it was trained with"], id="ckpt-other-lr"),
    pytest.param(RING, ["--ckpt_path", "<ckpt>", "--model.class_path", "repro.variants.VanillaGAN"],
                 ["ckpt_path", "model.class_path", "VanillaGAN"], id="ckpt-other-variant"),
    pytest.param(RING, ["--ckpt_path", "<ckpt>", "--model.init_args.n_dis", "2"],
                 ["ckpt_path", "model.init_args.n_dis 1 -> 2"], id="ckpt-other-n-dis"),
    pytest.param(RING, ["--ckpt_path", "<ckpt>", "--model.init_args.betas_d", "[0.0, 0.9]"],
                 ["ckpt_path", "model.init_args.betas_d"], id="ckpt-other-betas"),
    pytest.param(RING, ["--ckpt_path", "<ckpt>", "--data.batch_size", "32"],
                 ["ckpt_path", "data.batch_size 256 -> 32", "(its run's config.yaml)"], id="ckpt-other-batch"),
]


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-step checkpoint of RING (lr 1e-3, n_dis 1, batch 256) to resume from."""
    out = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", RING, "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
          "--samples.every_n_steps", "0", "--trainer.default_root_dir", str(out),
          "--trainer.logger.init_args.save_dir", str(out), "--evaluation.n_samples", "100"])
    return next(out.rglob("*.ckpt"))


def _image_folder(root: Path, sizes: list[tuple[int, int]], broken: bool = False) -> None:
    (root / "class0").mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (10 * i, 0, 0)).save(root / "class0" / f"{i}.png")
    if broken:
        (root / "class0" / "bad.png").write_bytes(b"\x89PNG\r\n not an image")


@pytest.fixture()
def bad_files(run_dir: Path, mnist_root: Path) -> Path:
    (run_dir / "empty").mkdir()
    (run_dir / "a_file").write_text("not a folder")
    (run_dir / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated mid-write")
    torch.save({"weights": torch.zeros(3)}, run_dir / "foreign.ckpt")
    torch.save({"state_dict": {"net.weight": torch.zeros(3)}, "repro_rng": {}}, run_dir / "other_model.ckpt")
    torch.save({"state_dict": {}, "repro_rng": Unsafe(run_dir / "MARKER")}, run_dir / "evil.ckpt")
    raw = run_dir / "truncated_mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root / "MNIST" / "raw").iterdir():
        if f.name == "train-images-idx3-ubyte":  # cut mid-file, as an interrupted copy leaves it
            (raw / f.name).write_bytes(f.read_bytes()[: 1 << 20])
        else:
            (raw / f.name).symlink_to(f)
    _image_folder(run_dir / "unreadable_folder", [(28, 28)] * 70, broken=True)
    _image_folder(run_dir / "mixed_folder", [(28, 28), (30, 28)] * 35)
    _image_folder(run_dir / "rgb_folder", [(28, 28)] * 70)
    return run_dir


@pytest.mark.parametrize(("config", "extra", "expected"), CASES)
def test_bad_input_is_one_clear_error(config: str, extra: list[str], expected: list[str], bad_files: Path,
                                      request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    if "<ckpt>" in extra:
        extra = [a.replace("<ckpt>", str(request.getfixturevalue("trained_ckpt"))) for a in extra]
        extra += ["--evaluation.n_samples", "100"]  # the checkpoint's own, so a case's one change is the only one
        capsys.readouterr()  # the fixture's own training output
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
    assert not (bad_files / "MARKER").exists(), "a crafted file ran code"


def test_suite_size() -> None:
    """Issue 17: at least 60 bad-input cases."""
    assert len(CASES) >= 60


def test_preflight_checks_leave_the_run_random_state_unchanged(run_dir):
    """Building the MNIST classifier to check image metrics (repro.preflight.check_evaluation) must not draw from
    the run's random stream: a run trains the same with and without image metrics (it used not to: the
    classifier's initialisation shifted every latent and batch after it)."""
    from conftest import load_config

    from repro import preflight

    cli = load_config("configs/mnist/nsgan.yaml", "--evaluation.image_metrics", "true")
    evaluation = next(c for c in cli.trainer.callbacks if type(c).__name__ == "FinalEvaluation")
    assert "image" in {f.name for f in evaluation.selected(cli.datamodule)}
    before = torch.get_rng_state()
    preflight.check_run(cli.model, cli.datamodule, cli.trainer)
    assert torch.equal(torch.get_rng_state(), before)
    torch.nn.Linear(4, 4)  # the guard is not vacuous: building a layer does draw from the stream
    assert not torch.equal(torch.get_rng_state(), before)

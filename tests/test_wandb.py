"""W&B wiring: a 50-step MNIST run with ``WANDB_MODE=offline`` and no interval flags writes a wandb run, read
back with wandb's own reader, holding the logged keys (losses, conditioning values and trace, spectra
histograms, sample and figure images, final metrics) each step once and in order, the config once with
the run's facts, the seed in name and tags; next to the always-on CSV logger, the spectra / trace PNGs and
a metrics.json whose metrics carry protocols."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from repro.fit import REPO_ROOT, ReproCLI
from repro.loggers import wandb_mode
from repro.metrics.classifier import CLASSIFIER_WEIGHTS


def read_wandb_log(path: Path) -> list[dict]:
    """The records of a ``.wandb`` transaction log, read by wandb's own reader (``wandb leet inspect --json``,
    wandb >= 0.31: one JSON record per line)."""
    cli = Path(sys.executable).parent / "wandb"
    done = subprocess.run([str(cli), "leet", "inspect", "--json", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_wandb_mode_follows_the_api_key(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_mnist_50_steps_offline_wandb_run(run_dir, mnist_root, monkeypatch, recwarn):
    """Only ``--wandb.enabled true`` (no interval flags): losses, spectra histograms, conditioning values and
    trace, sample grids and final metrics all reach the run, each step once and in order."""
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = ReproCLI(args=[
        "--config", str(REPO_ROOT / "configs/mnist/nsgan.yaml"), "--seed_everything", "3",
        "--data.num_samples", "2048", "--data.batch_size", "8", "--trainer.max_steps", "50",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--conditioning.n_samples", "2",
        "--evaluation.image_metrics", "true", "--evaluation.n_fid", "500", "--evaluation.n_is", "500",
        "--evaluation.cache_dir", str(run_dir / "cache"),
        "--wandb.enabled", "true", "--wandb.table", "testtable", "--wandb.variant", "nsgan-row",
    ])
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        wandb.finish()
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]  # CSV folder made before W&B's
    out = run_dir / "runs" / "lightning_logs" / "version_0"

    # figures: spectra histograms and the conditioning trace, non-empty PNGs, the last step once (as final)
    for png in ("spectra/step0000010.png", "spectra/final.png", "conditioning/trace.png", "samples/final.png"):
        assert (out / png).stat().st_size > 1000, png
    assert not (out / "spectra" / "step0000050.png").exists() and not (out / "samples" / "step0000050.png").exists()
    trace = json.loads((out / "conditioning" / "trace.json").read_text())
    assert [t["step"] for t in trace] == list(range(0, 51, 5))  # 50 steps / 10 points

    # the CSV logger is always on
    csv_header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/d_loss", "conditioning/log_cond_mean", "eval/fid500_train_classifier"} <= set(csv_header)

    # the wandb run folder sits in the run's folder; wandb's reader gives back what was logged
    (log,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    records = read_wandb_log(log)
    by_type = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r[r["type"]])
    run = by_type["run"][0]
    assert run["run_group"] == "testtable" and run["job_type"] == "nsgan-row"
    assert run["display_name"] == "nsgan-row/seed3" and {"testtable", "nsgan-row", "mnist", "seed3"} <= set(run["tags"])
    (config,) = [c["update"] for c in by_type["config"]]  # hyper-parameters once: the nested config only
    assert {"model", "data", "trainer"} <= set(config) and "lr_g" not in config
    assert config["run"]["data_root"] == str(mnist_root.resolve()) and config["run"]["seed"] == 3
    assert len(config["run"]["git_commit"]) == 40
    history = [h["item"] for h in by_type["history"]]
    steps = [h["trainer/global_step"] for h in history]
    assert steps == sorted(steps) and steps[-1] == 50
    losses = [h["trainer/global_step"] for h in history if "train/d_loss" in h]
    assert losses == list(range(1, 51)) and all("train/g_loss" in h for h in history if "train/d_loss" in h)

    def logged_at(key: str) -> list[int]:
        return [h["trainer/global_step"] for h in history if key in h or any(k.startswith(key + ".") for k in h)]

    assert logged_at("samples") == list(range(5, 51, 5))  # 10 grids, the last once
    assert logged_at("conditioning/log_cond_mean") == list(range(0, 51, 5))
    assert logged_at("conditioning_trace") == [50]
    assert logged_at("eval/fid500_train_classifier") == [50] and logged_at("eval/is500_classifier") == [50]
    layers = {k.split("/")[1] for h in history for k in h if k.startswith("spectra/") and k.endswith("/sigma_max")}
    assert len(layers) == 8  # 7 conv layers + the dense head of the SN-GAN standard CNN
    for layer in layers:
        assert logged_at(f"spectra/{layer}/sigma_max") == [10, 20, 30, 40, 50]
        (hist,) = [h for h in history if h["trainer/global_step"] == 50 and f"spectra/{layer}._type" in h]
        assert hist[f"spectra/{layer}._type"] == "histogram" and sum(hist[f"spectra/{layer}.values"]) > 0
    images = [h for h in history if h.get("samples._type") == "images/separated"]
    assert len(images) == 10 and all(h["samples.count"] == 1 for h in images)
    saved = {f["path"] for r in by_type["files"] for f in r["files"]}
    assert len([p for p in saved if p.startswith("media/images/samples_")]) == 10

    # metrics.json: names carry the protocol, and each value its full protocol record
    record = json.loads((out / "metrics.json").read_text())
    fid = record["metrics"]["fid500_train_classifier"]
    assert fid > 0 and record["metrics"]["is500_classifier"] >= 1.0
    proto = record["protocols"]["fid500_train_classifier"]
    committed = json.loads(CLASSIFIER_WEIGHTS.with_suffix(".json").read_text())
    assert proto["extractor"] == "classifier" and proto["extractor_sha256"] == committed["sha256"]
    assert proto["reference_split"] == "train" and proto["reference_size"] == 2048 and proto["reference_full"]
    assert proto["n_fid"] == 500 and proto["weights"] == "final" and proto["preprocessing"].startswith("(x+1)/2")
    assert proto["extractor_resize"].startswith("bilinear") and proto["extractor_input_range"].startswith("repro.pixels.to_float")


def test_image_metrics_options_are_checked():
    from repro.callbacks import FinalEvaluation

    with pytest.raises(ValueError, match="reference_split.*train, test"):
        FinalEvaluation(reference_split="val")
    with pytest.raises(ValueError, match="extractor.*inception, inception-ts, classifier"):
        FinalEvaluation(extractor="vgg")

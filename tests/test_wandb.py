"""W&B wiring: a 50-step MNIST run with ``WANDB_MODE=offline`` writes a wandb run folder holding the logged
keys (losses, conditioning trace, spectra histograms, sample and figure images, final metrics), next to
the always-on CSV logger, the spectra / trace PNGs and a metrics.json whose metrics carry protocols."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from repro.fit import REPO_ROOT, ReproCLI
from repro.loggers import wandb_mode
from repro.metrics.classifier import CLASSIFIER_WEIGHTS


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` transaction log (LevelDB-style log: 32 KiB blocks of
    chunks with a 7-byte header: crc32, length, type 1=full 2=first 3=middle 4=last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    records, pos, buf, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            records.append(rec)
            buf = b""
    return records


def test_wandb_mode_follows_the_api_key(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_mnist_50_steps_offline_wandb_run(run_dir, mnist_root, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = ReproCLI(args=[
        "--config", str(REPO_ROOT / "configs/mnist/nsgan.yaml"),
        "--data.data_root", str(mnist_root), "--data.num_samples", "2048", "--data.batch_size", "32",
        "--trainer.max_steps", "50", "--trainer.log_every_n_steps", "10",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--samples.every_n_steps", "25", "--spectra.every_n_steps", "25",
        "--conditioning.every_n_steps", "0", "--conditioning.n_samples", "2",
        "--evaluation.image_metrics", "true", "--evaluation.n_fid", "500", "--evaluation.n_is", "500",
        "--evaluation.cache_dir", str(run_dir / "cache"),
        "--wandb.enabled", "true", "--wandb.table", "testtable",
    ])
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        wandb.finish()
    out = run_dir / "runs" / "lightning_logs" / "version_0"

    # figures: spectra histograms and the conditioning trace, non-empty PNGs
    for png in ("spectra/step0000025.png", "spectra/final.png", "conditioning/trace.png", "samples/final.png"):
        assert (out / png).stat().st_size > 1000, png
    trace = json.loads((out / "conditioning" / "trace.json").read_text())
    assert [t["step"] for t in trace] == [0, 50]  # interval 0: start and end only

    # the CSV logger is always on
    csv_header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/d_loss", "conditioning/log_cond_mean", "eval/fid500_train_classifier"} <= set(csv_header)

    # the wandb run folder sits in the run's folder and holds the logged keys
    (log,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    records = wandb_records(log)
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "config"} <= kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "testtable/nsgan" and run.job_type == "nsgan"
    keys = {"/".join(item.nested_key) or item.key for r in records if r.WhichOneof("record_type") == "history"
            for item in r.history.item}
    for key in ("train/d_loss", "train/g_loss", "conditioning/log_cond_mean", "conditioning/log_cond_std",
                "eval/fid500_train_classifier", "eval/is500_classifier"):
        assert key in keys, key
    layers = {k.split("/")[1] for k in keys if k.startswith("spectra/") and k.endswith("/sigma_max")}
    assert len(layers) == 8  # 7 conv layers + the dense head of the SN-GAN standard CNN
    histograms = {k[: -len("/_type")] for k in keys if k.startswith("spectra/") and k.endswith("/_type")}
    assert {f"spectra/{layer}" for layer in layers} <= histograms
    assert any(k.startswith("samples") for k in keys)
    assert any(k.startswith("spectra_figure") for k in keys) and any(k.startswith("conditioning_trace") for k in keys)
    config_keys = {item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert {"model", "data", "trainer"} <= config_keys  # the full resolved config as hyper-parameters

    # metrics.json: names carry the protocol, and each value its full protocol record
    record = json.loads((out / "metrics.json").read_text())
    fid = record["metrics"]["fid500_train_classifier"]
    assert fid > 0 and record["metrics"]["is500_classifier"] >= 1.0
    proto = record["protocols"]["fid500_train_classifier"]
    committed = json.loads(CLASSIFIER_WEIGHTS.with_suffix(".json").read_text())
    assert proto["extractor"] == "classifier" and proto["extractor_sha256"] == committed["sha256"]
    assert proto["reference_split"] == "train" and proto["reference_size"] == 2048 and proto["reference_full"]
    assert proto["n_fid"] == 500 and proto["weights"] == "final" and proto["preprocessing"].startswith("(x+1)/2")


def test_image_metrics_options_are_checked():
    from repro.callbacks import FinalEvaluation

    with pytest.raises(ValueError, match="reference_split.*train, test"):
        FinalEvaluation(reference_split="val")
    with pytest.raises(ValueError, match="extractor.*inception, classifier"):
        FinalEvaluation(extractor="vgg")

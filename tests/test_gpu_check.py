"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end here on the CPU, so a lent GPU's few minutes are
not spent finding its bugs: smoke runs in both precisions, a timed window, the DDP subprocess, the JSON record."""
from __future__ import annotations

import json

from conftest import load_script


def _gpu_check():
    return load_script("benchmarks/gpu_check.py")


def test_gpu_check_runs_every_part_on_cpu(tmp_path, run_dir):
    code = _gpu_check().main([
        "--out", str(tmp_path), "--accelerator", "cpu", "--configs", "nsgan.yaml", "--steps", "2",
        "--paper-configs", "configs/sngan/cifar10_cnn_A.yaml", "--warmup", "1", "--time-steps", "2", "--ddp-steps", "20",
        "--", "--data.batch_size", "4", "--model.init_args.generator.init_args.width", "8",
        "--model.init_args.discriminator.init_args.width", "8",
    ])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and report["failed"] == []
    assert {k: v["ok"] for k, v in report["smoke"].items()} == {"smoke nsgan 32-true": True, "smoke nsgan bf16-mixed": True}
    timed = report["throughput"]
    assert set(timed) == {"throughput cifar10_cnn_A 32-true", "throughput cifar10_cnn_A bf16-mixed"}
    for result in timed.values():
        assert result["ok"] and 0 < result["ms_per_generator_iteration"] < 1e3 * result["seconds"] / 2
        assert result["hours_per_100k_updates"] == round(result["ms_per_generator_iteration"] * 100_000 / 3.6e6, 2)
    ddp = report["ddp"]["ddp ring8 nsgan"]
    assert ddp["ok"] and ddp["status"] == "finished" and "--trainer.strategy ddp" in ddp["command"]


def test_gpu_check_stops_at_its_budget(tmp_path, run_dir):
    code = _gpu_check().main(["--out", str(tmp_path), "--accelerator", "cpu", "--configs", "nsgan.yaml",
                              "--parts", "smoke,ddp", "--budget", "0"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and report["failed"] == []
    assert [v["ok"] for part in ("smoke", "ddp") for v in report[part].values()] == [None, None, None]
    assert all("budget" in v["skipped"] for part in ("smoke", "ddp") for v in report[part].values())

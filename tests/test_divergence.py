"""Divergence (issue 8): a run whose learning rate blows it up is stopped, recorded as diverged with its
step, and a table containing it completes and reports it beside (not inside) the mean."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from repro import REPO_ROOT
from repro.callbacks.divergence import DIVERGED_EXIT_CODE
from repro.cli import main
from repro.record import cpu_model, read_json, write_json_atomic
from repro.tables.plan import is_done, plan
from repro.tables.report import aggregate
from repro.tables.spec import load_spec

RING = str(REPO_ROOT / "configs/ring8/nsgan.yaml")
WGANGP = str(REPO_ROOT / "configs/ring8/wgangp.yaml")
TINY = {"trainer.max_steps": 12, "data.num_samples": 512, "data.batch_size": 64, "samples.every_n_steps": 0,
        "evaluation.n_samples": 200, "divergence.check_every_n_steps": 5}
BLOW_UP = {"model.init_args.lr_g": 1.0e12, "model.init_args.lr_d": 1.0e12}  # NaN from the first G step on


def test_diverging_run_stops_and_is_recorded(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"--{k}={v}" for k, v in {**TINY, **BLOW_UP}.items()]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", RING, *args, "--trainer.enable_progress_bar", "false"])
    assert exc.value.code == DIVERGED_EXIT_CODE
    assert "diverged" in capsys.readouterr().err
    out = run_dir / "runs" / "lightning_logs" / "version_0"
    record = json.loads((out / "metrics.json").read_text())
    # the loss went NaN at step 1; the host looked only at the step-5 check, and stopped there
    assert record["status"] == "diverged"
    assert record["diverged_at_step"] == 1 and record["generator_steps"] == 5
    assert "non-finite loss" in record["reason"] and "non-finite weights" in record["reason"]
    assert record["diverged_reason"] == "non-finite loss"
    assert "metrics" not in record and not (out / "samples" / "final.png").exists()  # no evaluation of NaN weights
    assert record["machine"]["accelerator"] == "cpu" and record["machine"]["torch_threads"] == 1


def test_healthy_run_is_not_flagged(run_dir: Path) -> None:
    main(["fit", "--config", RING, *[f"--{k}={v}" for k, v in TINY.items()], "--trainer.enable_progress_bar", "false"])
    record = json.loads((run_dir / "runs/lightning_logs/version_0/metrics.json").read_text())
    assert record["status"] == "finished" and record["generator_steps"] == 12
    # the machine it ran on: CPU model and torch's kernel ISA, cores it may use, this process's threads (1: conftest),
    # no GPU; no host name
    assert record["machine"] == {"cpu": cpu_model(), "cpu_isa": torch.backends.cpu.get_cpu_capability(),
                                 "logical_cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                                 "accelerator": "cpu", "accelerator_count": 0}
    assert record["machine"]["torch_threads"] == 1 and 1 <= record["machine"]["logical_cores"] <= os.cpu_count()


def test_loss_beyond_max_abs_loss_is_diverged(run_dir: Path) -> None:
    """``divergence.max_abs_loss``: a finite |loss| (or regularizer term) above it counts as a non-finite loss does.
    WGAN-GP runs unbounded and finishes; rerun with the bound between its two largest logged values, it is stopped
    at the next check after the largest, and recorded diverged at that loss's step with the loss named."""
    args = [f"--{k}={v}" for k, v in TINY.items()]
    args += ["--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
             "--trainer.enable_checkpointing=false"]  # no epoch-end checkpoint: checks every 5 steps and at the end
    main(["fit", "--config", WGANGP, *args])
    runs = run_dir / "runs" / "lightning_logs"
    assert json.loads((runs / "version_0" / "metrics.json").read_text())["status"] == "finished"
    with (runs / "version_0" / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["train/d_loss"]]
    assert "train/d_reg/gradient_penalty" in rows[0] and len(rows) == 12
    # each step's largest |loss| over the losses and the penalty, with its step and name
    peaks = sorted(max((abs(float(v)), int(row["step"]), k) for k, v in row.items() if k.startswith("train/"))
                   for row in rows)
    (second, _, _), (top, step, name) = peaks[-2:]
    bound = (top + second) / 2
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", WGANGP, *args, f"--divergence.max_abs_loss={bound}"])
    assert exc.value.code == DIVERGED_EXIT_CODE
    record = json.loads((runs / "version_1" / "metrics.json").read_text())
    assert record["status"] == "diverged" and record["diverged_at_step"] == step
    assert record["generator_steps"] == min(-(-step // 5) * 5, 12)  # the first check (every 5, and the last) after it
    assert record["diverged_reason"] == f"|{name}| {top:.3g} > divergence.max_abs_loss {bound:g}"
    assert record["reason"] == f"{record['diverged_reason']} first at generator step {step}"


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    write_json_atomic({"status": "diverged", "generator_steps": 5}, target)

    def killed(self: Path, text: str) -> None:  # the process dies halfway through writing the temp file
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic({"status": "finished", "generator_steps": 9, "metrics": {"fid": 1.0}}, target)
    assert json.loads(target.read_text()) == {"status": "diverged", "generator_steps": 5}  # old record intact


def test_table_with_a_diverging_row_completes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = tmp_path / "paper_tables" / "blowup.yaml"
    spec_path.parent.mkdir(parents=True)
    spec_path.write_text(yaml.safe_dump({
        "title": "Divergence", "paper": "none", "table": "none", "scale": "12 generator steps", "seeds": [0],
        "overrides": TINY,
        "columns": [{"key": "modes_200", "label": "modes", "protocol": "200 samples"}],
        "rows": [{"id": "ok", "config": RING}, {"id": "blowup", "config": RING, "overrides": BLOW_UP}],
    }))
    main(["reproduce", str(spec_path), "--devices", "2"])
    spec = load_spec(spec_path)
    ok, blowup = plan(spec)
    assert is_done(ok) and is_done(blowup)  # a diverged run is final: the table does not rerun it
    record = read_json(blowup.results_dir / "metrics.json")
    assert record["status"] == "diverged" and record["diverged_at_step"] == 1
    assert record["returncode"] == DIVERGED_EXIT_CODE
    assert read_json(ok.results_dir / "metrics.json")["status"] == "finished"
    cells = aggregate(spec)
    assert (cells["ok"]["modes_200"].n, cells["ok"]["modes_200"].diverged) == (1, 0)
    assert (cells["blowup"]["modes_200"].n, cells["blowup"]["modes_200"].diverged) == (0, 1)
    page = (tmp_path / "paper_tables" / "blowup.md").read_text()
    assert "1 diverged" in page

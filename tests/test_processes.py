"""Table jobs forked from the preloaded server (``repro.tables.processes``) are the same runs as fresh
``python -m repro`` subprocesses: equal weights, metrics and output, the same exit codes; forking is refused where a
fresh process would differ (CUDA, DDP, another checkout's package). A server under other start-up variables is
restarted: tests/test_runner.py's fault hooks (a ``sitecustomize`` on ``PYTHONPATH``) reach forked runs through it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from repro import REPO_ROOT
from repro.errors import USER_ERROR_EXIT_CODE
from repro.record import read_json
from repro.tables.processes import ForkedProcess, can_fork, start_process

FIT = [sys.executable, "-m", "repro", "fit", "--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"),
       "--trainer.max_steps", "6", "--data.num_samples", "256", "--data.batch_size", "64",
       "--samples.every_n_steps", "0", "--evaluation.n_samples", "200", "--trainer.log_every_n_steps", "2"]
CPU_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(argv: list[str], folder: Path, fork: bool) -> tuple[int, str]:
    folder.mkdir()
    env = CPU_ENV if fork else {**CPU_ENV, "CUDA_VISIBLE_DEVICES": ""}  # a GPU choice: a fresh process
    proc = start_process(argv, folder, env, folder / "out.log", folder / "err.log", append=False)
    assert isinstance(proc, ForkedProcess) is fork
    return proc.wait(timeout=600), (folder / "out.log").read_text()


def test_a_forked_run_equals_a_fresh_process(tmp_path):
    fresh_code, fresh_out = _run(FIT, tmp_path / "fresh", fork=False)
    forked_code, forked_out = _run(FIT, tmp_path / "forked", fork=True)
    assert fresh_code == forked_code == 0
    run = Path("runs/lightning_logs/version_0")
    records = [read_json(tmp_path / side / run / "metrics.json") for side in ("fresh", "forked")]
    assert records[0]["generator_steps"] == records[1]["generator_steps"] == 6
    assert records[0]["metrics"] == records[1]["metrics"]
    weights = [torch.load(next((tmp_path / side / run / "checkpoints").glob("*.ckpt")), map_location="cpu",
                          weights_only=True)["state_dict"] for side in ("fresh", "forked")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert "generator updates: 6 of 6" in fresh_out and "generator updates: 6 of 6" in forked_out
    code, _ = _run([*FIT, "--trainer.max_steps", "-3"], tmp_path / "bad", fork=True)
    assert code == USER_ERROR_EXIT_CODE and "max_steps" in (tmp_path / "bad" / "err.log").read_text()


def test_forking_is_refused_where_a_fresh_process_would_differ(tmp_path):
    assert can_fork(FIT, tmp_path, CPU_ENV, devices=1)
    assert not can_fork(FIT, tmp_path, CPU_ENV, devices=2)  # DDP re-runs sys.argv
    assert not can_fork(FIT, tmp_path, {**CPU_ENV, "CUDA_VISIBLE_DEVICES": "0"}, devices=1)
    assert not can_fork(["repro", "fit"], tmp_path, CPU_ENV, devices=1)
    (tmp_path / "repro").mkdir()
    (tmp_path / "repro" / "__init__.py").write_text("")  # `python -m repro` here imports this package
    assert not can_fork(FIT, tmp_path, CPU_ENV, devices=1)
    assert can_fork(FIT, REPO_ROOT, CPU_ENV, devices=1)

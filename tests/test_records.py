"""Issue 17, part 5: records hold strict JSON and no absolute machine paths, written and committed alike."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from repro import REPO_ROOT
from repro.portable import dumps, loads, path_roles, portable, portable_text
from repro.record import cpu_model, machine, process_seconds, read_json, write_json_atomic
from repro.tables.plan import plan
from repro.tables.execute import collect
from repro.tables.jobs import Job
from repro.tables.spec import load_spec
from test_tables import write_spec


def _strict(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON literal {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_are_written_as_strings_and_read_back(tmp_path: Path) -> None:
    record = {"metrics": {"reverse_kl": math.inf, "low": -math.inf, "odd": math.nan, "modes": 3.0}}
    write_json_atomic(record, tmp_path / "metrics.json")
    text = (tmp_path / "metrics.json").read_text()
    assert _strict(text)["metrics"]["reverse_kl"] == "Infinity"
    back = read_json(tmp_path / "metrics.json")["metrics"]
    assert back["reverse_kl"] == math.inf and back["low"] == -math.inf and math.isnan(back["odd"])
    assert back["modes"] == 3.0
    legacy = tmp_path / "old.json"  # records written before: bare literals
    legacy.write_text('{"metrics": {"reverse_kl": Infinity}}')
    assert read_json(legacy)["metrics"]["reverse_kl"] == math.inf
    assert loads(dumps({"a": [math.inf]})) == {"a": [math.inf]}


def test_paths_are_named_by_role(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPRO_DATA_DIR", "/srv/datasets")
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.delenv("REPRO_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    roles = path_roles(Path("/home/me/repro"))
    assert portable_text("/home/me/repro/runs/tables/toy/a/seed0", roles) == "runs/tables/toy/a/seed0"
    assert portable_text("/srv/datasets/MNIST/raw", roles) == "$REPRO_DATA_DIR/MNIST/raw"
    assert portable_text("/home/me/elsewhere/x", roles) == "~/elsewhere/x"
    assert portable_text("/mnt/a/b/c", roles) == "<external>/b/c"
    command = "repro bench --out /home/me/repro/results/bench see https://x.org/a/b (x+1)/2"
    assert portable_text(command, roles) == "repro bench --out results/bench see https://x.org/a/b (x+1)/2"
    assert portable({"a": ["/home/me/repro/c.yaml", 1.5, None]}, roles) == {"a": ["c.yaml", 1.5, None]}


def test_collected_record_is_strict_and_portable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "data"))
    spec = load_spec(write_spec(tmp_path))
    run = plan(spec)[0]
    run.work_dir.mkdir(parents=True)
    write_json_atomic({"status": "finished", "generator_steps": 4, "train_seconds": 1.0,
                       "metrics": {"reverse_kl_200": math.inf}}, run.work_dir / "metrics.json")
    (run.work_dir / "config.yaml").write_text(yaml.safe_dump({
        "trainer": {"logger": {"init_args": {"save_dir": str(run.work_dir)}}},
        "data": {"data_root": str(tmp_path / "data")}}))
    collect(Job((run,)), 0, 2.0, {})  # a single run's job
    text = (run.results_dir / "metrics.json").read_text()
    record = _strict(text)
    assert str(tmp_path) not in text and str(tmp_path) not in (run.results_dir / "config.yaml").read_text()
    assert record["metrics"]["reverse_kl_200"] == "Infinity"
    # a process record without a machine block (a crash writes none): the runner's view, threads unknown
    assert record["machine"]["cpu"] == cpu_model() and record["machine"]["torch_threads"] is None
    assert record["machine"]["logical_cores"] >= 1 and record["machine"]["accelerator"] in ("cpu", *(
        [torch.cuda.get_device_name()] if torch.cuda.is_available() else []))
    assert record["config"]["trainer"]["logger"]["init_args"]["save_dir"] == "runs/tables/tiny/nsgan/seed0"
    assert record["config"]["data"]["data_root"] == "$REPRO_DATA_DIR"
    assert yaml.safe_load((run.results_dir / "config.yaml").read_text())["data"]["data_root"] == "$REPRO_DATA_DIR"


def test_machine_names_the_cuda_device_a_module_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on a CUDA device records the device's name and the visible count; one on the CPU says "cpu", 0."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    on_gpu = machine(torch.device("cuda", 1))
    assert (on_gpu["accelerator"], on_gpu["accelerator_count"]) == ("NVIDIA H200", 2)
    assert machine(torch.device("cpu"))["accelerator"] == "cpu" and machine("cpu")["accelerator_count"] == 0
    assert sorted(on_gpu) == ["accelerator", "accelerator_count", "cpu", "cpu_isa", "logical_cores", "torch_threads"]


_ABSOLUTE = re.compile(r"""(?:^|[\s'"=])/(?:work|tmp|home|root|Users|mnt|srv|var|opt|data)/""")
RECORDS = sorted(p for p in (REPO_ROOT / "results").rglob("*")
                 if p.name in ("metrics.json", "config.yaml", "hparams.yaml", "results.json"))


def test_committed_records_are_strict_json_without_machine_paths() -> None:
    """`tools/portable_records.py` rewrote them; a new record with an absolute path or Infinity fails here."""
    assert len(RECORDS) > 200
    bad = []
    for path in RECORDS:
        text = path.read_text()
        try:
            data = _strict(text) if path.suffix == ".json" else yaml.safe_load(text)
        except ValueError as err:
            bad.append(f"{path.relative_to(REPO_ROOT)}: {err}")
            continue
        strings = re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(data))
        bad += [f"{path.relative_to(REPO_ROOT)}: {s[:80]}" for s in strings if _ABSOLUTE.search(s)]
    assert not bad, "\n".join(bad[:10])


def test_process_seconds_count_from_the_process_start_not_from_the_import() -> None:
    """A child that sleeps 1 s before importing ``repro.record`` reports at least that second, and no more than its
    parent timed from launch to exit; in this process the count only grows."""
    code = "import time; time.sleep(1.0); from repro.record import process_seconds; print(process_seconds())"
    t0 = time.monotonic()
    child = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                 cwd=REPO_ROOT).stdout)
    parent = time.monotonic() - t0
    assert 1.0 <= child <= parent + 0.01  # the kernel's start time is in 10 ms ticks, rounded down
    first = process_seconds()
    assert 0 < first <= process_seconds()

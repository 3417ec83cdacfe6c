"""The estimate of the compute a table still needs (repro.tables.estimate): per-update costs from hand-made records,
remaining updates from a fake in-progress checkpoint, the list schedule, and the line a dry-run prints. Trains nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.cli import main
from repro.record import read_record
from repro.tables import preview, resolve, runner
from repro.tables.estimate import (JobEstimate, estimate_jobs, estimate_line, list_schedule, longest_first,
                                   member_update_seconds, remaining_steps, wall_ratios)
from repro.tables.extend import Extension
from repro.tables.jobs import Job
from repro.tables.plan import Records, plan
from repro.tables.spec import TableSpec, load_spec
from test_tables import TINY_RUN, write_spec

STEPS = 1000
CONFIGS = {"nsgan": {"trainer": {"max_steps": STEPS}}, "lsgan": {"trainer": {"max_steps": STEPS}}}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty resolved-config cache of this test's own (a dry-run finds no parse: rows not checked)."""
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(resolve, "_PARSED", {})
    return resolve.cache_dir()


def _spec(root: Path) -> TableSpec:
    return load_spec(write_spec(root, overrides={**TINY_RUN, "trainer.max_steps": STEPS}))


def _write(spec: TableSpec, row: str, seed: int, **fields: object) -> None:
    folder = spec.results_dir / row / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"status": "finished", "row": row, "seed": seed, "steps_asked": fields.get("generator_steps"), **fields}
    (folder / "metrics.json").write_text(json.dumps(record))


def _records(spec: TableSpec) -> Records:
    return [(run, read_record(run.results_dir)) for run in plan(spec)]


def _job(spec: TableSpec, row: str, *seeds: int) -> Job:
    return Job(tuple(run for run in plan(spec) if run.row.id == row and run.seed in seeds))


def test_per_member_update_cost_from_single_and_ensemble_records(tmp_path):
    """Single runs: train_seconds / generator_steps; an ensemble member: its job's clock shared by its size; the
    row's median. Records of another length count; the wall / train ratio skips a wall that misses earlier processes."""
    spec = _spec(tmp_path)
    _write(spec, "nsgan", 0, train_seconds=100.0, generator_steps=1000, wall_seconds=150.0)
    _write(spec, "nsgan", 1, train_seconds=600.0, generator_steps=2000, wall_seconds=700.0,  # resumed: wall partial
           resumed_at_steps=[700], earlier_wall_seconds=None)
    ensemble = {"size": 2, "seeds": [0, 1], "command": "repro fit ..."}
    for seed in (0, 1):
        _write(spec, "lsgan", seed, train_seconds=400.0, generator_steps=1000, wall_seconds=440.0, ensemble=ensemble)
    cost = member_update_seconds(_records(spec))
    assert cost["nsgan"] == pytest.approx(((0.1 + 0.3) / 2, False)) and cost["lsgan"] == pytest.approx((0.2, False))
    ratio = wall_ratios(_records(spec))
    assert ratio == pytest.approx({"nsgan": 1.5, "lsgan": 1.1})
    _write(spec, "nsgan", 1, train_seconds=600.0, generator_steps=2000, wall_seconds=400.0)  # wall below training
    assert wall_ratios(_records(spec))["nsgan"] == pytest.approx(1.5)
    (estimate,) = estimate_jobs([_job(spec, "lsgan", 0, 1)], _records(spec), CONFIGS)
    assert estimate.remaining == STEPS and estimate.seconds == pytest.approx(0.2 * 2 * STEPS * 1.1)


def test_costs_come_from_records_of_this_kind_of_machine_where_a_row_has_them(tmp_path):
    """A row with records from this kind of machine (CPU model and kernel ISA) takes its cost from those alone; a row
    without any (another ISA, or records from before ``cpu_isa``) takes all of its records' and the line says so."""
    spec = _spec(tmp_path)
    fast, slow = {"cpu": "AMD EPYC", "cpu_isa": "AVX512"}, {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}
    _write(spec, "nsgan", 0, train_seconds=100.0, generator_steps=1000, machine=fast)
    _write(spec, "nsgan", 1, train_seconds=250.0, generator_steps=1000, machine=slow)
    _write(spec, "lsgan", 0, train_seconds=300.0, generator_steps=1000, machine=fast)
    _write(spec, "lsgan", 1, train_seconds=100.0, generator_steps=1000)  # no machine block
    here = ("AMD EPYC", "AVX2")
    cost = member_update_seconds(_records(spec), here)
    assert cost["nsgan"] == pytest.approx((0.25, False)) and cost["lsgan"] == pytest.approx((0.2, True))
    assert member_update_seconds(_records(spec))["nsgan"] == pytest.approx((0.175, False))  # any machine's
    estimates = estimate_jobs([_job(spec, "nsgan", 0), _job(spec, "lsgan", 1)], _records(spec), CONFIGS, kind=here)
    assert [e.elsewhere for e in estimates] == [False, True]
    assert "for 1 job (lsgan) made on other kinds of machine than this one" in estimate_line("tiny", estimates, 2)


def test_kernel_isa_read_without_torch_is_torchs(monkeypatch):
    """ATen's rule on hand-made flag sets, and on this machine's flags the ISA torch reports."""
    import torch

    from repro.record import kernel_isa, machine_kind

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert kernel_isa({"avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq"}) == "AVX512"
    assert kernel_isa({"avx2", "fma", "avx512f"}) == "AVX2"  # AVX512 needs vl, bw and dq too
    assert kernel_isa({"avx2"}) == kernel_isa(set()) == "DEFAULT"  # and AVX2 needs fma
    if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX2", "DEFAULT"):  # x86
        assert kernel_isa() == torch.backends.cpu.get_cpu_capability()
    assert machine_kind({"cpu": "X", "cpu_isa": "AVX2", "torch_threads": 1}) == ("X", "AVX2")
    assert machine_kind({"cpu": "X"}) is None


def test_remaining_steps_from_the_in_progress_checkpoint_and_an_extension(tmp_path):
    spec = _spec(tmp_path)
    job = _job(spec, "nsgan", 0)
    assert remaining_steps(job, CONFIGS) == STEPS
    job.in_progress_dir.mkdir(parents=True)
    progress = job.in_progress_dir / "progress.json"
    progress.write_text(json.dumps({"generator_steps": 300, "max_steps": STEPS}))
    assert remaining_steps(job, CONFIGS) == STEPS  # no checkpoint beside it: starts fresh
    (job.in_progress_dir / "last.ckpt").write_bytes(b"")
    assert remaining_steps(job, CONFIGS) == STEPS - 300
    assert remaining_steps(job, {}) == STEPS - 300  # no parse: the spec's trainer.max_steps
    assert remaining_steps(job, {"nsgan": {"trainer": {"max_steps": 2000}}}) == 2000  # started for another length
    progress.write_text(json.dumps({"generator_steps": 1500, "max_steps": 2000}))
    grown = {"nsgan": {"trainer": {"max_steps": 2000}}}
    assert remaining_steps(job, grown, Extension(job, STEPS, under_way=True)) == 2000 - 1500  # under way
    (job.in_progress_dir / "last.ckpt").unlink()
    assert remaining_steps(job, grown, Extension(job, STEPS, under_way=False)) == 2000 - STEPS  # from its final state


def test_list_schedule_by_hand():
    """3, 2, 2, 1 h on 2 slots in that order: 3 | 2 then 2 (at 2 h) | 1 at 3 h: 4 h. A 2-slot job waits for both."""
    h = 3600.0
    assert list_schedule([(3 * h, 1), (2 * h, 1), (2 * h, 1), (1 * h, 1)], 2) == 4 * h
    assert list_schedule([(1 * h, 1), (3 * h, 1), (2 * h, 2), (1 * h, 1)], 2) == 6 * h
    assert list_schedule([(2 * h, 1), (2 * h, 1)], 1) == 4 * h
    assert list_schedule([], 2) == 0.0


def test_rows_without_a_record_are_named_and_left_out(tmp_path):
    spec = _spec(tmp_path)
    _write(spec, "nsgan", 0, train_seconds=3600.0, generator_steps=1000)
    estimates = estimate_jobs([_job(spec, "nsgan", 1), _job(spec, "lsgan", 0, 1)], _records(spec), CONFIGS)
    assert estimates[0].seconds == pytest.approx(3600.0) and estimates[1].seconds is None
    line = estimate_line("tiny", estimates, 2)
    assert "~1.0 core-hours in 2 jobs" in line and "1 job without one: lsgan" in line
    assert "about 1.0 h on 2 device(s) for the 1 job with an estimate (longest job 1.0 h: nsgan/seed1)" in line
    many = [e for e in estimates[1:] for _ in range(6)]
    assert "6 jobs without one: lsgan)" in estimate_line("tiny", many + estimates[:1], 2)  # each row once
    assert estimate_line("tiny", many, 2) == ("tiny: estimated compute to finish: unknown for 6 jobs (6 jobs without "
                                              "one: lsgan)")


def test_dry_run_prints_the_estimate_after_the_summary(tmp_path, cache, capsys, monkeypatch):
    """nsgan's seed 0 finished (3.6 s an update, wall 1.5 x training; no machine block, so from another kind of
    machine): its seed 1 costs 1.5 h; lsgan has no record."""
    monkeypatch.setattr(preview, "visible_gpus", lambda: 0)
    spec = _spec(tmp_path)
    _write(spec, "nsgan", 0, train_seconds=3600.0, generator_steps=STEPS, wall_seconds=5400.0)
    main(["reproduce", str(spec.path), "--dry-run", "--devices", "2"])
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tiny: 2 rows x 2 seeds = 4 runs, 1 finished"))
    assert lines[at + 1] == ("tiny: estimated compute to finish: ~1.5 core-hours in 2 jobs (per-update costs from this "
                             "table's earlier records, for 1 job (nsgan) made on other kinds of machine than this one "
                             "(CPU model or vector ISA differ, or unrecorded), whose speed may differ several-fold; 1 "
                             "job without one: lsgan); about 1.5 h on 2 device(s) for the 1 job with an estimate "
                             "(longest job 1.5 h: nsgan/seed1)")


def test_a_run_prints_the_estimate_before_training(tmp_path, capsys, monkeypatch):
    """The runner's line, with the parse, the stacking check and the pool stubbed out (nothing trains)."""
    spec = _spec(tmp_path)
    _write(spec, "nsgan", 0, train_seconds=3600.0, generator_steps=STEPS)
    monkeypatch.setattr(runner, "check_configs", lambda *a, **k: CONFIGS)
    monkeypatch.setattr(runner, "table_staleness", lambda *a, **k: [])
    monkeypatch.setattr(preview, "stacking_refusals", lambda configs, parse="always": ({}, []))
    started: list[str] = []
    monkeypatch.setattr(runner, "_run_pool", lambda spec, todo, *a, **k: started.extend(j.name for j in todo) or [])
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    assert runner.reproduce(spec, devices=1, console=None) == []
    out = capsys.readouterr().out
    assert "tiny: estimated compute to finish: ~1.0 core-hours in 2 jobs" in out and "on 1 device(s)" in out
    assert started == ["lsgan/seeds 0,1", "nsgan/seed1"]  # the job without an estimate first (plan order: nsgan's)


def test_jobs_under_way_lead_then_those_without_an_estimate_then_longest_first(tmp_path):
    """nsgan costs 3.6 s an update, lsgan has no record: nsgan seed 1, under way (600 of 1,000 updates done), leads;
    then lsgan's job; then the rest longest first, which on 2 slots (42, 42, 42, 22, 22 min) ends at 86 min where
    plan order (22, 22, 42, 42, 42) ends at 106. Under way, the fewest updates left go first."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2], overrides={**TINY_RUN, "trainer.max_steps": STEPS}))
    _write(spec, "nsgan", 0, train_seconds=3600.0, generator_steps=STEPS)
    started = _job(spec, "nsgan", 1)
    started.in_progress_dir.mkdir(parents=True)
    (started.in_progress_dir / "last.ckpt").write_bytes(b"")
    (started.in_progress_dir / "progress.json").write_text(json.dumps({"generator_steps": 600, "max_steps": STEPS}))
    estimates = estimate_jobs([started, _job(spec, "nsgan", 2), _job(spec, "lsgan", 0)], _records(spec), CONFIGS)
    assert [(e.job.name, e.seconds, e.under_way) for e in longest_first(estimates)] == [
        ("nsgan/seed1", pytest.approx(1440.0), True), ("lsgan/seed0", None, False),
        ("nsgan/seed2", pytest.approx(3600.0), False)]
    almost, half = JobEstimate(started, 100, None, under_way=True), JobEstimate(started, 500, 1800.0, under_way=True)
    assert longest_first([JobEstimate(started, 1000, 3600.0), half, almost]) == [almost, half,
                                                                                  JobEstimate(started, 1000, 3600.0)]
    (started.in_progress_dir / "progress.json").write_text(json.dumps({"generator_steps": 600, "max_steps": 500}))
    assert not estimate_jobs([started], _records(spec), CONFIGS)[0].under_way  # begun for another length
    minutes = [22, 22, 42, 42, 42]
    ordered = [e.seconds for e in longest_first([JobEstimate(started, 1, 60.0 * m) for m in minutes])]
    assert ordered == [60.0 * m for m in sorted(minutes, reverse=True)]
    assert list_schedule([(s, 1) for s in ordered], 2) == 86 * 60.0 < list_schedule([(60.0 * m, 1) for m in minutes], 2)

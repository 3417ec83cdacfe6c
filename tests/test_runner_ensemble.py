"""The table runner's seed ensembles (issue 20): a row's unfinished seeds grouped into one process by default,
``--ensemble-size`` / ``--no-ensemble``, single runs for rows that cannot be stacked, members' records equal to
single runs', and an ensemble job killed mid-run that continues from its own checkpoint."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from repro import REPO_ROOT
from repro.cli import main
from repro.fit import parse_config
from repro.record import read_json
from repro.tables.jobs import job_folders
from repro.tables.plan import plan
from repro.tables.report import aggregate
from repro.tables.runner import check_configs, ensemble_cap, plan_jobs
from repro.tables.spec import SpecError, load_spec
from test_tables import TINY_RUN, kill_runner_midway, write_spec


def _matrix(*variants: str) -> list[dict[str, object]]:
    return [{"vars": {"variant": list(variants)}, "id": "{variant}", "group": "{variant}",
             "config": str(REPO_ROOT / "configs/ring8/{variant}.yaml")}]


def _fake_finished(spec_path: Path, row: str, seed: int) -> Path:
    """A finished record of (row, seed) whose config is the row as parsed now, so the runner reuses it."""
    spec = load_spec(spec_path)
    (run,) = plan(spec, [seed], [row])
    config = check_configs(spec, [run])[row]
    record = {"status": "finished", "generator_steps": config["trainer"]["max_steps"], "config": config,
              "metrics": {"modes_200": 7, "high_quality_200": 0.5}}
    run.results_dir.mkdir(parents=True, exist_ok=True)
    (run.results_dir / "metrics.json").write_text(json.dumps(record))
    return run.results_dir / "metrics.json"


def test_plan_groups_unfinished_seeds_caps_and_falls_back(tmp_path, capsys):
    """Unfinished seeds of a row form one job (seeds need not be consecutive); a seed with its own single-run
    checkpoint continues alone; an ensemble checkpoint of still-unfinished seeds is resumed by the job of exactly
    those seeds, one naming a finished seed is not; a refusing variant (RFGAN) and a multi-device row run single
    runs, and the dry-run says why; ``--ensemble-size`` and ``--no-ensemble`` cap the members."""
    rows = [{"id": "nsgan", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml")},
            {"id": "rfgan", "config": str(REPO_ROOT / "configs/ring8/rfgan.yaml")},
            {"id": "ddp", "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml"), "devices": 2},
            {"id": "apart", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "ensemble": False}]
    path = write_spec(tmp_path, rows=rows, matrix=[], claims=[], seeds=[0, 1, 2, 3, 4, 5])
    _fake_finished(path, "nsgan", 1)
    spec = load_spec(path)
    nsgan = spec.results_dir / "nsgan"
    (nsgan / "seed5" / "in_progress").mkdir(parents=True)
    (nsgan / "seed5" / "in_progress" / "last.ckpt").touch()  # a single run's own checkpoint
    runs = plan(spec)
    todo = [r for r in runs if not (r.row.id == "nsgan" and r.seed == 1)]
    configs = check_configs(spec, runs)

    jobs, how = plan_jobs(todo, configs, ensemble_cap(spec, None, False))
    seeds = {(j.row.id, tuple(j.seeds)) for j in jobs}
    assert ("nsgan", (0, 2, 3, 4)) in seeds and ("nsgan", (5,)) in seeds
    assert {s for row, s in seeds if row == "rfgan"} == {(k,) for k in range(6)}
    assert {s for row, s in seeds if row == "ddp"} == {(k,) for k in range(6)}
    assert "RFGAN cannot run as a seed ensemble (its frozen autoencoder" in how["rfgan"]
    assert how["ddp"] == "6 single run(s): devices: 2 (DDP)"
    assert how["apart"] == "6 single run(s): the row sets ensemble: false"
    assert how["nsgan"] == "1 ensemble(s) of 4 seeds, 1 single run(s) (1 continuing their own checkpoint)"

    (job,) = [j for j in jobs if j.seeds == [0, 2, 3, 4]]
    args = job.fit_args()
    assert args[args.index("--ensemble.seeds") + 1] == "[0, 2, 3, 4]"
    assert json.loads(args[args.index("--ensemble.run_dirs") + 1]) == [str(r.work_dir) for r in job.runs]
    assert args[args.index("--resumable.dirpath") + 1] == "results/tiny/nsgan/ensemble_0_2_3_4/in_progress"
    assert args[args.index("--seed_everything") + 1] == "0"
    parsed = parse_config(args)  # the job's command parses as `repro fit` reads it
    assert parsed["ensemble"]["seeds"] == [0, 2, 3, 4]

    jobs, how = plan_jobs(todo, configs, ensemble_cap(spec, 3, False))  # 4 seeds, at most 3 a job: 2 + 2
    assert [j.seeds for j in jobs if j.row.id == "nsgan"] == [[0, 2], [3, 4], [5]]

    for seeds in ((2, 3), (1, 4)):  # an interrupted job of unfinished seeds; one of a finished seed
        folder = nsgan / ("ensemble_" + "_".join(map(str, seeds))) / "in_progress"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").touch()
    assert set(job_folders(spec, spec.row("nsgan"))) == {(2, 3), (1, 4)}
    jobs, how = plan_jobs(todo, configs, ensemble_cap(spec, None, False))
    assert [j.seeds for j in jobs if j.row.id == "nsgan"] == [[0, 4], [2, 3], [5]]
    assert "resumes ensemble_2_3" in how["nsgan"]

    jobs, how = plan_jobs(todo, configs, ensemble_cap(spec, 2, True))
    assert all(len(j.runs) == 1 for j in jobs) and how["nsgan"] == "5 single run(s): --no-ensemble"

    main(["reproduce", str(path), "--dry-run"])
    out = capsys.readouterr().out
    assert "23 to run on" in out and "in 21 process(es)" in out and "runs as" in out and "(DDP)" in out
    with pytest.raises(SpecError, match="--ensemble-size must be >= 1"):
        ensemble_cap(spec, 0, False)
    with pytest.raises(SpecError, match="'ensemble_size' must be a positive integer"):
        load_spec(write_spec(tmp_path, name="bad", ensemble_size=0))
    assert ensemble_cap(load_spec(write_spec(tmp_path, name="capped", ensemble_size=2)), None, False) == 2


def _log(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_ensemble_records_equal_single_runs_float64_and_page_has_the_same_form(tmp_path, capsys, monkeypatch):
    """One row x 2 seeds in float64 (the training processes' default dtype, as tests/test_ensemble.py sets it),
    as one ensemble job and with --no-ensemble: each member's record has the single run's fields (plus its mates)
    and metrics, its training log the same steps and losses to 1e-10, and the two pages the same columns, rows,
    cells and claim verdicts."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("import torch\ntorch.set_default_dtype(torch.float64)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    run = {**TINY_RUN, "trainer.max_steps": 20, "trainer.log_every_n_steps": 1}
    claims = [{"text": "NS-GAN finds a mode", "source": "none", "a": "nsgan:modes_200:mean", "op": ">", "b": 0.5}]
    paths = {name: write_spec(tmp_path, name, overrides=run, matrix=_matrix("nsgan"), claims=claims)
             for name in ("ens", "single")}
    main(["reproduce", str(paths["ens"]), "--devices", "1"])
    assert "in 1 process(es)" in capsys.readouterr().out
    main(["reproduce", str(paths["single"]), "--devices", "2", "--no-ensemble"])
    capsys.readouterr()
    for seed in (0, 1):
        ens = read_json(tmp_path / f"results/ens/nsgan/seed{seed}/metrics.json")
        single = read_json(tmp_path / f"results/single/nsgan/seed{seed}/metrics.json")
        assert ens["status"] == single["status"] == "finished"
        assert set(ens) - set(single) == {"ensemble"} and set(single) <= set(ens)
        assert ens["ensemble"]["seeds"] == [0, 1] and ens["ensemble"]["size"] == 2
        assert "--ensemble.seeds '[0, 1]'" in ens["ensemble"]["command"]
        assert ens["metrics"] == single["metrics"] and ens["generator_steps"] == single["generator_steps"] == 20
        assert ens["command"] == single["command"].replace("results/single", "results/ens").replace(
            "tables/single", "tables/ens")  # the command that re-runs the member alone
        rows = _log(tmp_path / f"results/ens/nsgan/seed{seed}/train_log.csv")
        ref = _log(tmp_path / f"results/single/nsgan/seed{seed}/train_log.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in ref] and len(rows) >= 10
        for mine, theirs in zip(rows, ref):
            for key, value in theirs.items():
                if key.startswith("train/") and value:
                    assert abs(float(mine[key]) - float(value)) <= 1e-10, (seed, key)
    assert not job_folders(load_spec(paths["ens"]), load_spec(paths["ens"]).row("nsgan"))  # removed once done
    cells = {name: aggregate(load_spec(path)) for name, path in paths.items()}
    assert {r: {c: cell.values for c, cell in cols.items()} for r, cols in cells["ens"].items()} == \
        {r: {c: cell.values for c, cell in cols.items()} for r, cols in cells["single"].items()}
    pages = {name: (tmp_path / "paper_tables" / f"{name}.md").read_text().replace(name, "TABLE")
             for name in paths}
    table_lines = {name: [ln for ln in page.splitlines() if ln.startswith("|")] for name, page in pages.items()}
    # the claim gets the same verdict either way (these runs record no curve: "convergence not measured")
    assert table_lines["ens"] == table_lines["single"]
    assert any("| **convergence not measured** |" in ln for ln in table_lines["ens"])


def _job_steps(root: Path, table: str) -> int:
    progress = read_json(root / "results" / table / "nsgan" / "ensemble_0_1" / "in_progress" / "progress.json")
    return (progress or {}).get("generator_steps", 0)


def test_killed_ensemble_job_continues_from_its_checkpoint_bit_identically(tmp_path, capsys):
    """SIGKILL the runner mid-ensemble (seed 2 of the row already finished: not in the job, never redone): the
    job's process checkpoints as it ends with its runner, the page lists both members as unfinished with the job's
    progress, and the next `repro reproduce` resumes the job of seeds 0 and 1; its members' records (metrics,
    curves) and training logs equal an uninterrupted ensemble job's, and the job's checkpoint folder is gone."""
    run = {**TINY_RUN, "trainer.max_steps": 160, "evaluation.curve_points": 4, "resumable.every_minutes": 0.001}
    killed = write_spec(tmp_path, "killed", overrides=run, matrix=_matrix("nsgan"), seeds=[0, 1, 2], claims=[])
    whole = write_spec(tmp_path, "whole", overrides=run, matrix=_matrix("nsgan"), seeds=[0, 1], claims=[])
    finished = _fake_finished(killed, "nsgan", 2)
    finished_bytes = finished.read_bytes()
    stopped_at, _, _ = kill_runner_midway(tmp_path, killed, lambda: _job_steps(tmp_path, "killed"), total=160)
    assert not (tmp_path / "results/killed/nsgan/seed0/metrics.json").exists()

    main(["reproduce", str(killed), "--report-only"])
    page = (tmp_path / "paper_tables" / "killed.md").read_text()
    assert f"- `nsgan/seed0`: {stopped_at:,} of 160 generator updates" in page and "`nsgan/seed1`" in page
    capsys.readouterr()
    main(["reproduce", str(killed), "--devices", "1"])
    out = capsys.readouterr().out
    assert "2 finished, 2 to run" not in out and "1 finished, 2 to run" in out
    assert "nsgan/seeds 0,1 (resumed): from results/killed/nsgan/ensemble_0_1/in_progress" in out
    main(["reproduce", str(whole), "--devices", "1"])
    capsys.readouterr()
    assert finished.read_bytes() == finished_bytes  # not redone
    assert not (tmp_path / "results/killed/nsgan/ensemble_0_1").exists()
    for seed in (0, 1):
        a = read_json(tmp_path / f"results/killed/nsgan/seed{seed}/metrics.json")
        b = read_json(tmp_path / f"results/whole/nsgan/seed{seed}/metrics.json")
        assert a["status"] == b["status"] == "finished" and a["generator_steps"] == 160
        assert a["resumed_at_steps"] and a["resumed_at_steps"][0] >= stopped_at - 1 and b["resumed_at_steps"] == []
        assert a["metrics"] == b["metrics"] and a["curves"] == b["curves"]
        assert a["earlier_wall_seconds"] > 0 and a["wall_seconds"] > a["earlier_wall_seconds"]  # both processes
        log_a = (tmp_path / f"results/killed/nsgan/seed{seed}/train_log.csv").read_text()
        log_b = (tmp_path / f"results/whole/nsgan/seed{seed}/train_log.csv").read_text()
        assert [r.split(",")[1:] for r in log_a.splitlines()] == [r.split(",")[1:] for r in log_b.splitlines()]


def test_ensemble_members_are_one_wandb_run_each(tmp_path, monkeypatch):
    """`--wandb` on an ensemble job: every member logs to its own offline W&B run in its own folder, named and
    tagged as its single run would be; the ensemble's own folder has none."""
    import wandb

    from repro.fit import run_fit
    from test_wandb import read_wandb_log

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(tmp_path / "ens"), "name": "", "version": ""}}
    try:
        run_fit(["--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "--trainer.max_steps", "3",
                 "--data.num_samples", "256", "--evaluation.n_samples", "200", "--samples.every_n_steps", "0",
                 "--trainer.enable_progress_bar", "false", "--trainer.logger", json.dumps(logger),
                 "--ensemble.seeds", "[2, 5]", "--wandb.enabled", "true", "--wandb.table", "t", "--wandb.variant", "row"])
    finally:
        wandb.finish()
    assert not (tmp_path / "ens" / "wandb").exists()
    for seed in (2, 5):
        (log,) = (tmp_path / "ens" / f"seed{seed}" / "wandb").glob("offline-run-*/run-*.wandb")
        run = next(r["run"] for r in read_wandb_log(log) if r["type"] == "run")
        assert run["display_name"] == f"row/seed{seed}" and f"seed{seed}" in run["tags"]
        history = [r["history"]["item"] for r in read_wandb_log(log) if r["type"] == "history"]
        assert [h["trainer/global_step"] for h in history if "train/d_loss" in h] == [1, 2, 3]


def test_a_fresh_start_removes_superseded_ensemble_folders(tmp_path, monkeypatch):
    """A job (or single run) that starts fresh removes its row's ensemble job folders that share a seed with it,
    under results/ and runs/ (their checkpoint can never be resumed now), and keeps the others."""
    from repro.tables import execute
    from repro.tables.jobs import Job

    spec = load_spec(write_spec(tmp_path, matrix=_matrix("nsgan"), claims=[], seeds=[0, 1, 2, 3]))
    runs = plan(spec)
    for name in ("ensemble_0_1", "ensemble_2_3"):
        for base in (spec.results_dir, spec.runs_dir):
            (base / "nsgan" / name / "in_progress").mkdir(parents=True)
            (base / "nsgan" / name / "in_progress" / "last.ckpt").touch()
    started: list[list[str]] = []
    monkeypatch.setattr(execute, "start_process", lambda args, *rest, **kwargs: started.append(args))
    execute.start(Job((runs[1],)), dict(os.environ))
    assert not (spec.results_dir / "nsgan" / "ensemble_0_1").exists()
    assert not (spec.runs_dir / "nsgan" / "ensemble_0_1").exists()
    assert set(job_folders(spec, spec.row("nsgan"))) == {(2, 3)}
    assert "--ensemble.seeds" not in started[0] and "--ckpt_path" not in started[0]
    job = Job((runs[2], runs[3]))  # resumes its own checkpoint
    execute.start(job, dict(os.environ))
    assert started[1][started[1].index("--ckpt_path") + 1] == "results/tiny/nsgan/ensemble_2_3/in_progress/last.ckpt"
    assert read_json(job.in_progress_dir / "resumes.json") == {"steps": [None], "earlier_wall_seconds": None}

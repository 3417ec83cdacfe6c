"""The table runner's reliability: stale records, duplicate seeds, truncated runs, the table lock, failures
that exit non-zero with their cause, evaluation-only retries, the submitit launcher, and a resumed run's wall
time over all its processes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from PIL import Image

from repro import REPO_ROOT
from repro.callbacks.resumable import ResumableCheckpoint
from repro.cli import main
from repro.record import Status, process_seconds, read_json, status_of, write_json_atomic
from repro.tables import execute
from repro.tables.compute import compute_line
from repro.tables.execute import failure_cause
from repro.tables.jobs import Job
from repro.tables.lock import TableLock, TableLocked
from repro.tables.plan import is_done, plan, read_records
from repro.tables.report import aggregate
from repro.tables.runner import check_configs, table_staleness
from repro.tables.spec import SpecError, load_spec
from repro.tables.stale import code_changes, code_warning
from test_tables import TINY_RUN, write_spec


def _one_row_spec(root: Path, config: Path, **changes: object) -> Path:
    rows = [{"id": "nsgan", "config": str(config), **changes.pop("row", {})}]
    return write_spec(root, rows=rows, matrix=[], claims=[], seeds=[0], **changes)


def _finished_record(spec_path: Path, **extra: object) -> Path:
    """A finished record of the spec's one run whose config is the row as parsed now (a run of these inputs)."""
    spec = load_spec(spec_path)
    (run,) = plan(spec)
    config = check_configs(spec, [run])[run.row.id]
    record = {"status": "finished", "generator_steps": config["trainer"]["max_steps"], "config": config,
              "metrics": {"modes_200": 7, "high_quality_200": 0.5}, **extra}
    run.results_dir.mkdir(parents=True, exist_ok=True)
    (run.results_dir / "metrics.json").write_text(json.dumps(record))
    return run.results_dir / "metrics.json"


def test_stale_records_refuse_reuse_until_rerun_or_accepted(tmp_path, capsys):
    """A finished record whose resolved config differs from the row parsed now is stale, whether the spec, the
    row's overrides or the config file changed: `repro reproduce` stops before training naming the run, the keys
    and both ways out; --accept-stale and --report-only keep it and list it on the page; --rerun-stale plans it."""
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    config = tmp_path / "configs" / "ring8" / "nsgan.yaml"
    path = _one_row_spec(tmp_path, config)
    _finished_record(path)
    spec = load_spec(path)
    assert table_staleness(spec, read_records(spec)) == []  # same inputs: reused
    cases = [  # (what changes from the recorded inputs, the key it shows as)
        (lambda: _one_row_spec(tmp_path, config, overrides={**TINY_RUN, "trainer.max_steps": 8}),
         "trainer.max_steps: 4 → 8"),
        (lambda: _one_row_spec(tmp_path, config, row={"overrides": {"model.init_args.lr_g": 0.005}}),
         "model.init_args.lr_g: 0.001 → 0.005"),
        (lambda: (_one_row_spec(tmp_path, config), config.write_text(config.read_text().replace("lr_d: 1.0e-3",
                                                                                               "lr_d: 2.0e-3"))),
         "model.init_args.lr_d: 0.001 → 0.002"),
    ]
    for change, shown in cases:
        change()
        spec = load_spec(path)
        (stale,) = table_staleness(spec, read_records(spec))
        assert stale.run.name == "nsgan/seed0" and stale.differences == [shown]

    with pytest.raises(SystemExit) as exc:  # the config-file change is in place now
        main(["reproduce", str(path), "--devices", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nsgan/seed0: model.init_args.lr_d: 0.001 → 0.002" in err and "--rerun-stale" in err and "--accept-stale" in err
    assert not (tmp_path / "runs").exists()  # nothing trained

    main(["reproduce", str(path), "--dry-run", "--rerun-stale"])
    assert "0 finished, 1 to run" in capsys.readouterr().out
    main(["reproduce", str(path), "--accept-stale"])  # nothing to train; the page lists the run
    page = (tmp_path / "paper_tables" / "tiny.md").read_text()
    assert "**Stale runs** (1)" in page and "- `nsgan/seed0`: `model.init_args.lr_d: 0.001 → 0.002`" in page
    assert "7.0 (n=1)" in page or "7.0 ± 0.0 (n=1)" in page
    (tmp_path / "paper_tables" / "tiny.md").unlink()
    main(["reproduce", str(path), "--report-only"])  # never refuses; marks
    assert (tmp_path / "paper_tables" / "tiny.md").read_text() == page


def test_run_specific_keys_and_paths_do_not_make_a_record_stale(tmp_path):
    """The seed, logger and checkpoint folders, resumable pacing, W&B and where the data lives differ between
    runs and machines, not inputs; a key only one side has is a code change, not a config change."""
    path = _one_row_spec(tmp_path, REPO_ROOT / "configs/ring8/nsgan.yaml")
    record_path = _finished_record(path)
    record = json.loads(record_path.read_text())
    config = record["config"]
    config["seed_everything"] = 7
    config["trainer"]["logger"]["init_args"]["save_dir"] = "/elsewhere/runs/tables/tiny/nsgan/seed0"
    config["resumable"] = {"every_minutes": 1.0, "dirpath": "somewhere"}
    config["data"]["data_root"] = "$REPRO_DATA_DIR"
    config["model"]["init_args"]["a_parameter_of_older_code"] = 1
    record_path.write_text(json.dumps(record))
    spec = load_spec(path)
    assert table_staleness(spec, read_records(spec)) == []


def test_code_staleness_names_commits_and_files_but_keeps_records(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "repro").mkdir()
    (tmp_path / "repro" / "a.py").write_text("x = 1\n")
    (tmp_path / "repro" / "b.py").write_text("y = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    old = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    path = _one_row_spec(tmp_path, REPO_ROOT / "configs/ring8/nsgan.yaml")
    _finished_record(path, git_commit=old)
    spec = load_spec(path)
    assert code_changes(tmp_path, read_records(spec)) == {}  # the checkout is the records' code
    (tmp_path / "repro" / "a.py").write_text("x = 2\n")
    changes = code_changes(tmp_path, read_records(spec))
    assert changes == {old: ["repro/a.py"]}
    warning = code_warning("tiny", read_records(spec), changes)
    assert f"1 run(s) at {old[:10]}" in warning and "repro/a.py" in warning and "b.py" not in warning
    assert table_staleness(spec, read_records(spec)) == [] and is_done(plan(spec)[0])  # reported, not rerun
    _finished_record(path, git_commit="0" * 40)
    assert code_changes(tmp_path, read_records(spec)) == {"0" * 40: None}
    assert "commit not in this repository" in code_warning("tiny", read_records(spec), {"0" * 40: None})


def test_duplicate_seeds_are_an_error_at_load_and_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SpecError, match=r"'seeds' lists \[0\] more than once"):
        load_spec(write_spec(tmp_path, name="dup", seeds=[0, 0, 1]))
    path = write_spec(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", str(path), "--seeds", "0", "0", "--dry-run"])
    assert exc.value.code == 2 and "--seeds: 0 given twice" in capsys.readouterr().err
    with pytest.raises(SpecError, match="--only: nsgan given twice"):
        plan(load_spec(path), only=["nsgan", "nsgan"])


def test_a_row_may_set_its_own_seeds(tmp_path, capsys):
    """A row's `seeds` (more seeds where they decide a verdict) replace the table's for that row: planned, read,
    counted in the dry-run and drawn in its panel; `--seeds` still selects for every row; duplicates are refused."""
    rows = [{"id": "nsgan", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml")},
            {"id": "lsgan", "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml"), "seeds": [0, 1, 4]}]
    matrix = [{"vars": {"set": [{"id": "lsgan", "seeds": [0, 1, 4]}]}, "id": "{set[id]}", "seeds": "{set[seeds]}",
               "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml")}]  # the same row from a matrix variable
    assert load_spec(write_spec(tmp_path, name="m", rows=rows[:1], matrix=matrix)).rows == load_spec(
        write_spec(tmp_path, name="m", matrix=[], rows=rows)).rows
    path = write_spec(tmp_path, matrix=[], rows=rows)
    spec = load_spec(path)
    assert spec.seeds_of(spec.row("nsgan")) == [0, 1] and spec.seeds_of(spec.row("lsgan")) == [0, 1, 4]
    assert [(r.row.id, r.seed) for r in plan(spec)] == [("nsgan", 0), ("nsgan", 1), ("lsgan", 0), ("lsgan", 1),
                                                        ("lsgan", 4)]
    assert [(r.row.id, r.seed) for r in plan(spec, seeds=[2])] == [("nsgan", 2), ("lsgan", 2)]
    assert [r.seed for r, _ in read_records(spec)] == [0, 1, 0, 1, 4]
    main(["reproduce", str(path), "--dry-run"])
    assert "2 rows x 2-3 seeds = 5 runs, 0 finished, 5 to run" in capsys.readouterr().out
    image = tmp_path / "results/tiny/lsgan/seed4/samples/final.png"
    image.parent.mkdir(parents=True)
    plt.imsave(image, np.zeros((8, 8, 3)))
    main(["reproduce", str(path), "--report-only"])
    panels = sorted(p.name for p in (tmp_path / "paper_tables/figures/tiny").glob("*final.png"))
    assert panels == ["lsgan_final.png"]  # the row's third seed drawn; nsgan has no image to draw
    assert Image.open(tmp_path / "paper_tables/figures/tiny/lsgan_final.png").width == 3 * 260  # 3 seeds x 2.6 in
    with pytest.raises(SpecError, match=r"row 'lsgan': 'seeds' lists \[1\] more than once"):
        load_spec(write_spec(tmp_path, name="dup", matrix=[], rows=[{**rows[1], "seeds": [1, 1]}]))
    with pytest.raises(SpecError, match=r"row 'lsgan': 'seeds' must be a non-empty list of integers, got \[\]"):
        load_spec(write_spec(tmp_path, name="empty", matrix=[], rows=[{**rows[1], "seeds": []}]))


def test_a_record_short_of_its_length_is_not_finished(tmp_path):
    """`finished` at 270 of 1,000 asked steps (e.g. stopped by max_time) reads as stopped: not done (it runs
    again), counted with the failed runs on the page, never averaged in."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1]))
    short, whole = plan(spec, only=["nsgan"])
    for run, steps in ((short, 270), (whole, 1000)):
        run.results_dir.mkdir(parents=True)
        record = {"status": "finished", "generator_steps": steps, "config": {"trainer": {"max_steps": 1000}},
                  "metrics": {"modes_200": steps / 100}}
        (run.results_dir / "metrics.json").write_text(json.dumps(record))
    assert status_of(read_json(short.results_dir / "metrics.json")) is Status.STOPPED and not is_done(short)
    assert is_done(whole)
    cell = aggregate(spec)["nsgan"]["modes_200"]
    assert (cell.values, cell.failed) == ([10.0], 1)
    # the record's own steps_asked (a max_epochs bound, say) wins over the config's max_steps
    assert status_of({"status": "finished", "generator_steps": 500, "steps_asked": 500,
                      "config": {"trainer": {"max_steps": 1000}}}) is Status.FINISHED


def test_table_lock_names_the_other_runner_and_replaces_a_stale_one(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    notes: list[str] = []
    with TableLock(spec, note=notes.append) as lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(TableLocked) as exc, TableLock(spec):
            pass
        assert f"pid {os.getpid()} on this host" in str(exc.value) and str(lock.path) in str(exc.value)
    assert not lock.path.exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.path.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with TableLock(spec, note=notes.append):
        pass
    assert notes == [f"tiny: removed a stale lock of runner pid {gone.pid} (no such process)"]
    lock.path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "jobs": ["123_0"]}))
    with pytest.raises(TableLocked, match="pid 1 on host elsewhere .*SLURM jobs: 123_0.*delete"):
        with TableLock(spec):
            pass


_FAULT = """\
import os
if os.environ.get("REPRO_TEST_FAULTS"):
    from pathlib import Path
    faults = Path(os.environ["REPRO_TEST_FAULTS"])
    from repro.callbacks.evaluation import FinalEvaluation
    from repro.variants import GANModule
    evaluate = FinalEvaluation.evaluate
    def failing_evaluate(self, trainer, module):
        if (faults / "evaluation").exists():
            raise RuntimeError("injected evaluation fault")
        return evaluate(self, trainer, module)
    FinalEvaluation.evaluate = failing_evaluate
    step = GANModule.training_step
    def no_training(self, *args, **kwargs):
        if (faults / "training").exists():
            raise AssertionError("trained again")
        return step(self, *args, **kwargs)
    GANModule.training_step = no_training
"""


def test_run_failing_at_evaluation_exits_non_zero_then_is_reevaluated_not_retrained(tmp_path, monkeypatch, capsys):
    """A fault injected at the final evaluation: `repro reproduce` exits 4 naming the run and the cause, the run
    keeps its final checkpoint; once the fault is gone, the next `repro reproduce` only evaluates it (training
    would raise) and records it finished at its full length."""
    hooks, faults = tmp_path / "hooks", tmp_path / "faults"
    hooks.mkdir()
    faults.mkdir()
    (hooks / "sitecustomize.py").write_text(_FAULT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("REPRO_TEST_FAULTS", str(faults))
    (faults / "evaluation").touch()
    path = _one_row_spec(tmp_path, REPO_ROOT / "configs/ring8/nsgan.yaml")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", str(path), "--devices", "1"])
    assert exc.value.code == 4
    out = capsys.readouterr().out
    assert "1 run(s) failed" in out and "nsgan/seed0: RuntimeError: injected evaluation fault" in out
    (run,) = plan(load_spec(path))
    record = read_json(run.results_dir / "metrics.json")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: injected evaluation fault"
    assert read_json(run.in_progress_dir / "progress.json")["generator_steps"] == 4
    assert (run.results_dir / "samples" / "final.png").is_file()  # the other end-of-training hooks ran

    (faults / "evaluation").unlink()
    (faults / "training").touch()
    main(["reproduce", str(path), "--devices", "1"])
    assert "(evaluating only)" in capsys.readouterr().out
    record = read_json(run.results_dir / "metrics.json")
    assert record["status"] == "finished" and record["generator_steps"] == 4 and record["resumed_at_steps"] == [4]
    assert record["metrics"]["modes_200"] >= 0 and not run.in_progress_dir.exists()


def test_launcher_local_runs_the_table_as_a_job_array(tmp_path, capsys):
    """`--launcher local` (submitit's local executor, what `--launcher slurm` uses on a cluster): the unfinished
    runs of a 2-row x 2-seed table run as one array element per row (a seed ensemble each), their records are
    the pool's, the page is written, the lock released."""
    path = write_spec(tmp_path, slurm={"time_min": 10})
    main(["reproduce", str(path), "--launcher", "local"])
    out = capsys.readouterr().out
    assert "submitted 2 job(s) as 1 local job array(s)" in out and "nsgan/seeds 0,1" in out
    for row in ("nsgan", "lsgan"):
        for seed in (0, 1):
            record = read_json(tmp_path / "results" / "tiny" / row / f"seed{seed}" / "metrics.json")
            assert record["status"] == "finished" and record["generator_steps"] == 4 and record["seed"] == seed
            assert record["ensemble"]["seeds"] == [0, 1]
    assert "(n=2)" in (tmp_path / "paper_tables" / "tiny.md").read_text()
    assert list((tmp_path / "runs" / "tables" / "tiny" / "submitit").glob("*_log.out"))
    assert not (tmp_path / "results" / "tiny" / ".runner.lock").exists()
    main(["reproduce", str(path), "--launcher", "local"])
    assert "4 finished, 0 to run" in capsys.readouterr().out


def test_failure_cause_is_one_line():
    """The cause printed for a failed run: the exception line of its stderr tail (not a later warning), the
    signal that killed it, a stop reason, else its exit code with its last line."""
    tail = ["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: lr_g must be > 0",
            "/venv/lightning/warnings.py:42: UserWarning: something"]
    assert failure_cause({"error_tail": tail, "returncode": 1}) == "ValueError: lr_g must be > 0"
    assert failure_cause({"error_tail": ["a warning"], "returncode": -9}).startswith("killed by signal 9")
    assert failure_cause({"stop_reason": "trainer.max_time reached at generator step 270 of 1000"}).startswith("trainer")
    assert failure_cause({"error_tail": [], "returncode": 1}) == "exit code 1: no error output"
    assert failure_cause({"error_tail": ["repro fit: error: config file 'x' not found"], "returncode": 2}) == \
        "repro fit: error: config file 'x' not found"


def test_resumable_checkpoint_carries_the_wall_time_of_earlier_processes():
    """The callback's count: this process alone when fresh; the total a checkpoint carried plus this process when
    resumed (what the next process restores); unknown after a checkpoint without its state (written before it)."""
    fresh = ResumableCheckpoint()
    before = process_seconds()
    assert before <= fresh.wall_seconds() <= process_seconds()
    resumed = ResumableCheckpoint()
    resumed.on_load_checkpoint(None, None, {})  # Lightning: this hook, then load_state_dict if the state is there
    resumed.load_state_dict({"wall_seconds": 100.0})
    assert 100.0 + before <= resumed.wall_seconds() <= 100.0 + process_seconds()
    nxt = ResumableCheckpoint()
    nxt.on_load_checkpoint(None, None, {})
    nxt.load_state_dict(resumed.state_dict())  # a third process restores the sum and adds its own time
    assert nxt.wall_seconds() >= 100.0 + 2 * before
    old = ResumableCheckpoint()
    old.on_load_checkpoint(None, None, {})  # no state for this callback in the checkpoint
    assert old.wall_seconds() is None and old.state_dict() == {"wall_seconds": None}


def test_resumed_record_counts_the_wall_time_of_every_process(tmp_path, monkeypatch):
    """Hand-made in-progress state of a run killed twice: each resume notes progress.json's count of the earlier
    processes (the second resume's 130.5 s includes the first's 100 s), and the finished record's wall_seconds
    is that plus the last process's timing. A checkpoint from before the count (no wall_seconds) leaves it unknown:
    that record holds the last process alone and the Compute line calls the sum a lower bound, for it only."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1]))
    counted, old = plan(spec, only=["nsgan"])
    monkeypatch.setattr(execute, "start_process", lambda args, *rest, **kwargs: None)
    for run, progress in ((counted, [(2, 100.0), (3, 130.5)]), (old, [(3, None)])):
        run.in_progress_dir.mkdir(parents=True)
        (run.in_progress_dir / "last.ckpt").touch()
        for steps, wall in progress:
            progress_json = {"generator_steps": steps, "max_steps": 4, **({} if wall is None else {"wall_seconds": wall})}
            write_json_atomic(progress_json, run.in_progress_dir / "progress.json")
            execute.start(Job((run,)), dict(os.environ))
    assert read_json(counted.in_progress_dir / "resumes.json") == {"steps": [2, 3], "earlier_wall_seconds": 130.5}
    assert read_json(old.in_progress_dir / "resumes.json") == {"steps": [3], "earlier_wall_seconds": None}
    assert execute.earlier_wall_seconds({"steps": [2]}) is None  # a resume noted before the count
    assert execute.earlier_wall_seconds({}) == 0.0
    for run in (counted, old):  # the last process trained to its length and wrote its record
        write_json_atomic({"status": "finished", "generator_steps": 4, "train_seconds": 40.0,
                           "metrics": {"modes_200": 7, "high_quality_200": 0.5}}, run.work_dir / "metrics.json")
        (run.work_dir / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 4}}))
    record = execute.collect_run(counted, Job((counted,)), 0, 20.25, {})
    assert record["wall_seconds"] == 150.75 and record["earlier_wall_seconds"] == 130.5
    assert read_json(counted.results_dir / "metrics.json")["wall_seconds"] == 150.75
    record = execute.collect_run(old, Job((old,)), 0, 20.25, {})
    assert record["wall_seconds"] == 20.25 and record["earlier_wall_seconds"] is None
    line = compute_line(read_records(spec))
    assert "1 process resumed earlier processes' checkpoints: the wall time adds each earlier process's" in line
    assert "1 process continued an earlier process's checkpoint in a record from before" in line
    assert "lower bound" in line
    (old.results_dir / "metrics.json").unlink()
    line = compute_line(read_records(spec))
    assert "1 process resumed earlier processes' checkpoints" in line and "lower bound" not in line


def test_a_setting_the_spec_asks_for_that_the_record_lacks_makes_it_stale(tmp_path):
    """A record from before an option existed holds no value for it: harmless while the spec leaves it alone (a
    code change), a config change once the spec sets it to another value than the row's without it (the record was
    made without what the spec asks for), and harmless again when the spec (or the row) sets it to that value, the
    default here (the record ran it: the option keeps the old behaviour there)."""
    config = REPO_ROOT / "configs/ring8/nsgan.yaml"
    path = _one_row_spec(tmp_path, config)
    record_path = _finished_record(path)
    record = json.loads(record_path.read_text())
    assert record["config"]["evaluation"]["bn_standing_batches"] == 0  # the default, which the row does not set
    del record["config"]["evaluation"]["bn_standing_batches"]
    record_path.write_text(json.dumps(record))
    spec = load_spec(path)
    assert table_staleness(spec, read_records(spec)) == []
    spec = load_spec(_one_row_spec(tmp_path, config, overrides={**TINY_RUN, "evaluation.bn_standing_batches": 50}))
    assert spec.results_dir == load_spec(path).results_dir
    [stale] = table_staleness(spec, read_records(spec))
    assert stale.differences == ["evaluation.bn_standing_batches: (not in the record) → 50"]
    assert stale.keys == ("evaluation.bn_standing_batches",)  # what the extension planner reads
    for changes in ({"overrides": {**TINY_RUN, "evaluation.bn_standing_batches": 0}},
                    {"row": {"overrides": {"evaluation.bn_standing_batches": 0}}}):
        spec = load_spec(_one_row_spec(tmp_path, config, **changes))
        for parse in ("missing", "never"):  # the row without the setting is the one parsed before it was set
            assert table_staleness(spec, read_records(spec), parse=parse) == [], (changes, parse)


def test_a_config_file_setting_a_parameter_the_record_lacks_makes_it_stale(tmp_path):
    """A config file (not the spec or row) that sets a parameter newer than the record: a config change when the
    value differs from the parameter's default in its class's signature (the default is what the record's code
    ran), a code change when it is that default; read through a variant's ``**kwargs`` (``model.init_args.updates``)
    and a net's dataclass argument (``init.conv_truncation``)."""
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    config = tmp_path / "configs/ring8/nsgan.yaml"
    plain = config.read_text()
    config.write_text(plain.replace("    lr_g: 1.0e-3\n", "    lr_g: 1.0e-3\n    updates: shared_z\n"))
    path = _one_row_spec(tmp_path, config)
    record_path = _finished_record(path)
    record = json.loads(record_path.read_text())
    assert record["config"]["model"]["init_args"]["generator"]["init_args"]["init"]["conv_truncation"] is None
    del record["config"]["model"]["init_args"]["updates"]
    del record["config"]["model"]["init_args"]["generator"]["init_args"]["init"]["conv_truncation"]
    record_path.write_text(json.dumps(record))
    spec = load_spec(path)
    [stale] = table_staleness(spec, read_records(spec))
    assert stale.differences == ["model.init_args.updates: (not in the record) → 'shared_z'"]
    [cached] = table_staleness(spec, read_records(spec), parse="never")  # the dry-run's: from the cache, no import
    assert cached.differences == stale.differences
    config.write_text(plain)  # back to the default: a code change
    assert table_staleness(load_spec(path), read_records(spec)) == []

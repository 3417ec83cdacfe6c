"""A finished table run lengthened by its spec continues from its final state (issue 19): equal, bit for bit, to a
from-scratch run of the new length when nothing in it depends on the length; retrained, with the reason in the
plan, when something does (``lr_decay: linear``) or another setting changed."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from repro import REPO_ROOT
from repro.cli import main
from repro.record import read_json, write_json_atomic
from repro.tables.extend import _merged, length_dependence, void_retimed
from repro.tables.jobs import Job
from repro.tables.plan import plan
from repro.tables.spec import load_spec
from repro.variants import NSGAN, GANModule
from test_tables import TINY_RUN, write_spec

NSGAN_CONFIG = str(REPO_ROOT / "configs/ring8/nsgan.yaml")
CONSTANT = {"model.init_args.lr_decay": "none"}
SHORT = {**TINY_RUN, "trainer.max_steps": 20, "evaluation.curve_points": 4}


def _spec(root: Path, name: str, rows: list[dict[str, Any]], seeds: list[int], **run: Any) -> Path:
    return write_spec(root, name, overrides={**SHORT, **run}, matrix=[], claims=[], seeds=seeds,
                      rows=[{"config": NSGAN_CONFIG, **row} for row in rows])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class _Annealed(NSGAN):
    """A variant with a second length-dependent setting (for the declaration test only)."""

    LENGTH_DEPENDENT = {**GANModule.LENGTH_DEPENDENT, "anneal": False}


def test_length_dependence_is_declared_by_the_model_class():
    nsgan = "repro.variants.NSGAN"
    assert length_dependence({"model": {"class_path": nsgan, "init_args": {"lr_decay": "none"}}}) == []
    assert length_dependence({"model": {"class_path": nsgan, "init_args": {"lr_decay": "linear"}}}) == [
        "model.lr_decay: linear"]
    assert _Annealed.length_dependence({"lr_decay": "none", "anneal": True}) == ["model.anneal: True"]
    assert _Annealed.length_dependence({"lr_decay": "none"}) == ["model.anneal: (not in the config)"]
    assert "not a GANModule" in length_dependence({"model": {"class_path": "collections.OrderedDict"}})[0]


class _Unfinished:
    """The parts of a ``Job`` that ``void_retimed`` reads: a row id, a name and an in-progress folder."""

    def __init__(self, folder: Path, row: str, started_for: int) -> None:
        self.row, self.name, self.in_progress_dir = type("Row", (), {"id": row})(), f"{row}/seed0", folder
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"state")
        write_json_atomic({"generator_steps": 7, "max_steps": started_for}, folder / "progress.json")

    def resume_checkpoint(self) -> Path | None:
        return self.in_progress_dir / "last.ckpt" if (self.in_progress_dir / "last.ckpt").exists() else None


def test_unfinished_run_started_for_another_length_restarts_when_its_schedule_is_tied_to_it(tmp_path):
    """A checkpoint trained under a 20-update decay resumed at 40 would mix two schedules: removed (restart);
    a length-free run continues; one planned for the length it started at, or never checked, as the rule says."""
    jobs = {row: _Unfinished(tmp_path / row / "in_progress", row, started)
            for row, started in (("tied", 20), ("free", 20), ("same", 40), ("unchecked", 20))}
    configs = {row: {"trainer": {"max_steps": 40}} for row in jobs}
    lines = void_retimed(list(jobs.values()), configs,
                         {"tied": ["model.lr_decay: linear"], "free": [], "same": ["model.lr_decay: linear"]})
    assert lines[0] == ("tied/seed0: restarts from step 0: its checkpoint (step 7) was started for 20 updates, now "
                        "40, and model.lr_decay: linear depends on trainer.max_steps")
    assert len(lines) == 2 and lines[1].startswith("unchecked/seed0: restarts from step 0")
    assert {row for row, job in jobs.items() if job.resume_checkpoint()} == {"free", "same"}


def test_merged_curve_keeps_the_old_points_the_new_one_lacks():
    old = [[5, 1.0], [10, 2.0], [20, 3.0]]
    new = [[5, 1.0], [10, 2.0], [30, 4.0], [40, 5.0]]
    assert _merged(old, new) == [[5, 1.0], [10, 2.0], [20, 3.0], [30, 4.0], [40, 5.0]]


def test_lengthened_constant_lr_run_continues_and_equals_a_run_of_the_new_length(tmp_path, capsys):
    """Rows at 20 updates: constant LR, linear decay, and constant LR whose lr_g then changes. The spec raised to
    40 (plus a fresh row equal to the constant one, trained from scratch at 40): the dry-run says which extend and
    why the others rerun; `--rerun-stale` continues the constant row (record, curve and final weights equal the
    fresh row's; its old curve points kept) and retrains the other two from step 0."""
    rows = [{"id": "const", "overrides": CONSTANT}, {"id": "linear"}, {"id": "other", "overrides": CONSTANT}]
    path = _spec(tmp_path, "grow", rows, [0])
    main(["reproduce", str(path), "--devices", "2"])
    old = read_json(tmp_path / "results/grow/const/seed0/metrics.json")
    assert old["status"] == "finished" and [p[0] for p in old["curves"]["modes_200"]] == [5, 10, 15, 20]
    final = tmp_path / "runs/tables/grow/const/seed0/final_state/last.ckpt"
    assert final.is_file() and not (tmp_path / "results/grow/const/seed0/in_progress").exists()
    assert read_json(final.parent / "progress.json")["generator_steps"] == 20
    assert old["checkpoint"] and "final_state" not in old["checkpoint"]
    capsys.readouterr()

    linear_old = read_json(tmp_path / "results/grow/linear/seed0/metrics.json")
    rows[2]["overrides"] = {**CONSTANT, "model.init_args.lr_g": 0.002}
    path = _spec(tmp_path, "grow", [*rows, {"id": "fresh", "overrides": CONSTANT}], [0], **{"trainer.max_steps": 40})
    main(["reproduce", str(path), "--dry-run", "--check-configs", "--rerun-stale"])
    out = capsys.readouterr().out
    assert "const/seed0: trainer.max_steps: 20 → 40 -> extends from 20" in out
    assert "linear/seed0: trainer.max_steps: 20 → 40 -> reruns: model.lr_decay: linear depends on" in out
    assert "other/seed0: model.init_args.lr_g: 0.001 → 0.002; trainer.max_steps: 20 → 40 -> reruns: " \
           "model.init_args.lr_g changed" in out
    assert "3 stale: rerun, 1 continue to the new length" in out and "const/seed0 extends from 20" in out

    main(["reproduce", str(path), "--devices", "2", "--rerun-stale"])
    out = capsys.readouterr().out
    assert "const/seed0 (extending from step 20): from results/grow/const/seed0/in_progress" in out
    a = read_json(tmp_path / "results/grow/const/seed0/metrics.json")
    b = read_json(tmp_path / "results/grow/fresh/seed0/metrics.json")
    assert a["status"] == b["status"] == "finished" and a["generator_steps"] == 40
    assert a["metrics"] == b["metrics"]
    assert a["extended_from_steps"] == [20] and a["extended_from_commits"] == [old["git_commit"]]
    assert a["resumed_at_steps"] == [20] and b["resumed_at_steps"] == [] and "extended_from_steps" not in b
    # the old points (its final one too), then every 40 / 4 updates past the old end, as the fresh run has them
    for key, points in a["curves"].items():
        assert points[:4] == old["curves"][key] and points[4:] == b["curves"][key][2:]
    assert [p[0] for p in a["curves"]["modes_200"]] == [5, 10, 15, 20, 30, 40]
    assert [p[0] for p in a["curve_seconds"]] == [5, 10, 15, 20, 30, 40]
    assert a["train_seconds"] > old["train_seconds"]
    assert 0 < a["earlier_wall_seconds"] <= old["wall_seconds"] < a["wall_seconds"]  # the old process, to its state
    _assert_same_weights(tmp_path / "runs/tables/grow/const/seed0/final_state/last.ckpt",
                         tmp_path / "runs/tables/grow/fresh/seed0/final_state/last.ckpt")
    with (tmp_path / "results/grow/const/seed0/train_log.csv").open() as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f)})
    assert steps[0] < 20 < steps[-1]  # the old rows and the new ones
    for row in ("linear", "other"):
        record = read_json(tmp_path / f"results/grow/{row}/seed0/metrics.json")
        assert record["generator_steps"] == 40 and record["resumed_at_steps"] == []
        assert "extended_from_steps" not in record and record["curves"]["modes_200"][0][0] == 10  # retrained
    # the row retrained for its length keeps its 20-update run's finals (a length check); a changed setting does not
    assert read_json(tmp_path / "results/grow/linear/seed0/metrics.json")["shorter_runs"] == [
        {"generator_steps": 20, "git_commit": linear_old["git_commit"], "metrics": linear_old["metrics"],
         "config": linear_old["config"]}]
    assert "shorter_runs" not in read_json(tmp_path / "results/grow/other/seed0/metrics.json")
    assert "shorter_runs" not in a  # continued: its curve holds the 20-update point


def test_a_committed_final_state_continues_where_runs_is_gone(tmp_path, capsys, monkeypatch):
    """``commit_final_states``: a finished run keeps its final state beside its record under ``results/`` (none under
    ``runs/``); with ``runs/`` removed, as in a fresh clone, a longer spec continues the run from there; a job that
    starts from scratch removes the old state first."""
    from repro.tables import execute

    def spec(steps: int) -> Path:
        return write_spec(tmp_path, "grow", overrides={**SHORT, "trainer.max_steps": steps}, matrix=[], claims=[],
                          seeds=[0], rows=[{"id": "const", "config": NSGAN_CONFIG, "overrides": CONSTANT}],
                          commit_final_states=True)

    main(["reproduce", str(spec(20)), "--devices", "1"])
    state = tmp_path / "results/grow/const/seed0/final_state"
    assert (state / "last.ckpt").is_file() and read_json(state / "progress.json")["generator_steps"] == 20
    assert not (state.parent / "in_progress").exists() and not list((tmp_path / "runs").rglob("final_state"))
    shutil.rmtree(tmp_path / "runs")
    capsys.readouterr()
    main(["reproduce", str(spec(40)), "--devices", "1", "--rerun-stale"])
    assert "const/seed0 (extending from step 20)" in capsys.readouterr().out
    record = read_json(state.parent / "metrics.json")
    assert record["status"] == "finished" and record["generator_steps"] == 40 and record["extended_from_steps"] == [20]
    assert read_json(state / "progress.json")["generator_steps"] == 40 and not (state.parent / "in_progress").exists()
    monkeypatch.setattr(execute, "start_process", lambda args, *rest, **kwargs: None)
    execute.start(Job(tuple(plan(load_spec(spec(40))))), dict(os.environ))  # from scratch
    assert not state.exists() and (state.parent / "metrics.json").exists()


def test_a_prepared_extension_continues_in_a_clone_without_the_final_state(tmp_path, capsys):
    """An extension prepared on one machine (its ``in_progress/`` holds the final state and ``extension.json``,
    committed before it trained a step) continues on a machine whose ``runs/`` is gone and whose spec did not commit
    final states: not discarded and retrained from step 0."""
    def spec(steps: int) -> Path:
        return _spec(tmp_path, "grow", [{"id": "const", "overrides": CONSTANT}], [0], **{"trainer.max_steps": steps})

    main(["reproduce", str(spec(20)), "--devices", "1"])
    old = read_json(tmp_path / "results/grow/const/seed0/metrics.json")
    in_progress = tmp_path / "results/grow/const/seed0/in_progress"
    shutil.copytree(tmp_path / "runs/tables/grow/const/seed0/final_state", in_progress)  # as begin_extension does
    write_json_atomic({"from_steps": 20, "records": {"0": old}}, in_progress / "extension.json")
    shutil.rmtree(tmp_path / "runs")
    capsys.readouterr()
    main(["reproduce", str(spec(40)), "--dry-run", "--check-configs", "--rerun-stale"])
    assert "const/seed0: trainer.max_steps: 20 → 40 -> extends from 20 (continuing its extension under way)" \
        in capsys.readouterr().out
    main(["reproduce", str(spec(40)), "--devices", "1", "--rerun-stale"])
    record = read_json(tmp_path / "results/grow/const/seed0/metrics.json")
    assert record["status"] == "finished" and record["generator_steps"] == 40
    assert record["extended_from_steps"] == [20] and record["resumed_at_steps"] == [20]
    assert all(points[:4] == old["curves"][key] for key, points in record["curves"].items())


def test_a_final_state_under_runs_continues_once_the_spec_commits_final_states(tmp_path, capsys):
    """A run finished before its spec set ``commit_final_states`` (its state under ``runs/``) still continues when the
    spec then grows its length and sets it, and its new final state is kept under ``results/``."""
    def spec(steps: int, commit: bool) -> Path:
        return write_spec(tmp_path, "grow", overrides={**SHORT, "trainer.max_steps": steps}, matrix=[], claims=[],
                          seeds=[0], rows=[{"id": "const", "config": NSGAN_CONFIG, "overrides": CONSTANT}],
                          commit_final_states=commit)

    main(["reproduce", str(spec(20, False)), "--devices", "1"])
    kept = tmp_path / "runs/tables/grow/const/seed0/final_state"
    committed = tmp_path / "results/grow/const/seed0/final_state"
    assert (kept / "last.ckpt").is_file() and not committed.exists()
    capsys.readouterr()
    main(["reproduce", str(spec(40, True)), "--devices", "1", "--rerun-stale"])
    assert "const/seed0 (extending from step 20)" in capsys.readouterr().out
    assert read_json(committed.parent / "metrics.json")["extended_from_steps"] == [20]
    assert read_json(committed / "progress.json")["generator_steps"] == 40


def test_renewing_a_results_folder_keeps_only_the_named_subfolders(tmp_path):
    """``_renew``: an ensemble job's folder keeps its final state when its members are done; empty, it goes."""
    from repro.tables.execute import _renew

    folder = tmp_path / "results/t/r/ensemble_0_1"
    for sub in ("in_progress", "final_state"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "progress.json").write_text("{}")
    _renew(folder, [folder / "final_state", folder / "absent"], tmp_path, recreate=False)
    assert sorted(p.name for p in folder.iterdir()) == ["final_state"]
    assert (folder / "final_state/progress.json").read_text() == "{}" and not list(tmp_path.glob("*.parked"))
    _renew(folder, [], tmp_path, recreate=False)
    assert not folder.exists()
    _renew(folder, [], tmp_path)
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.slow("~15-45 s; test_lengthened_constant_lr_run_continues_and_equals_a_run_of_the_new_length "
                  "covers the same path")
def test_ensemble_job_lengthened_continues_as_one_job(tmp_path, capsys):
    """A seed ensemble finished at 20 keeps one final state for the job; raised to 40 the job continues from it, and
    each member's record and the job's weights equal a from-scratch ensemble job's at 40. ``--no-extend`` needs
    ``--rerun-stale``, and with it the plan reruns every stale run."""
    path = _spec(tmp_path, "grow", [{"id": "const", "overrides": CONSTANT}], [0, 1])
    main(["reproduce", str(path), "--devices", "1"])
    assert (tmp_path / "runs/tables/grow/const/ensemble_0_1/final_state/last.ckpt").is_file()
    assert not (tmp_path / "results/grow/const/ensemble_0_1").exists()
    capsys.readouterr()

    rows = [{"id": "const", "overrides": CONSTANT}, {"id": "fresh", "overrides": CONSTANT}]
    path = _spec(tmp_path, "grow", rows, [0, 1], **{"trainer.max_steps": 40})
    with pytest.raises(SystemExit):
        main(["reproduce", str(path), "--no-extend"])
    main(["reproduce", str(path), "--dry-run", "--check-configs", "--rerun-stale", "--no-extend"])
    assert "const/seed1: trainer.max_steps: 20 → 40 -> reruns (--no-extend)" in capsys.readouterr().out
    main(["reproduce", str(path), "--devices", "2", "--rerun-stale"])
    assert "const/seeds 0,1 (extending from step 20)" in capsys.readouterr().out
    for seed in (0, 1):
        a = read_json(tmp_path / f"results/grow/const/seed{seed}/metrics.json")
        b = read_json(tmp_path / f"results/grow/fresh/seed{seed}/metrics.json")
        assert a["ensemble"]["seeds"] == b["ensemble"]["seeds"] == [0, 1]
        assert a["metrics"] == b["metrics"] and a["extended_from_steps"] == [20]
        assert [p[0] for p in a["curves"]["modes_200"]] == [5, 10, 15, 20, 30, 40]
        assert a["curves"]["modes_200"][4:] == b["curves"]["modes_200"][2:]
    _assert_same_weights(tmp_path / "runs/tables/grow/const/ensemble_0_1/final_state/last.ckpt",
                         tmp_path / "runs/tables/grow/fresh/ensemble_0_1/final_state/last.ckpt")


def test_length_scale_trains_the_shorter_runs_then_rerun_stale_keeps_their_finals(tmp_path, capsys):
    """`--length-scale 0.5` trains the not-yet-run rows at half their length and writes no page (and refuses to
    replace finished runs); `--rerun-stale` then trains the spec's length, each record keeping the shorter finals."""
    path = _spec(tmp_path, "scaled", [{"id": "linear"}], [0])  # lr_decay linear: retrained, not continued
    main(["reproduce", str(path), "--devices", "1", "--length-scale", "0.5"])
    assert "no page written" in capsys.readouterr().out and not (tmp_path / "paper_tables/scaled.md").exists()
    short = read_json(tmp_path / "results/scaled/linear/seed0/metrics.json")
    assert short["status"] == "finished" and short["generator_steps"] == 10
    with pytest.raises(SystemExit) as refused:
        main(["reproduce", str(path), "--length-scale", "0.5", "--rerun-stale"])
    assert refused.value.code == 2 and "never replaces a finished run" in capsys.readouterr().err
    main(["reproduce", str(path), "--devices", "1", "--rerun-stale"])
    full = read_json(tmp_path / "results/scaled/linear/seed0/metrics.json")
    assert full["generator_steps"] == 20 and full["shorter_runs"] == [
        {"generator_steps": 10, "git_commit": short["git_commit"], "metrics": short["metrics"],
         "config": short["config"]}]
    assert "length-converged" in (tmp_path / "paper_tables/scaled.md").read_text()  # the page judges by it


def test_length_scale_scales_each_rows_stated_length_and_refuses_unstated_ones(tmp_path):
    from repro.tables.spec import SpecError, load_spec, with_length_scale

    spec = load_spec(_spec(tmp_path, "lengths", [{"id": "a"}, {"id": "b", "overrides": {"trainer.max_steps": "30"}}],
                           [0]))
    scaled = with_length_scale(spec, 0.5)
    assert [r.overrides["trainer.max_steps"] for r in scaled.rows] == [10, 15]  # the table's 20, the row's "30"
    assert scaled.overrides == spec.overrides and spec.rows[0].overrides == {}  # the spec itself is unchanged
    with pytest.raises(SpecError, match="between 0 and 1"):
        with_length_scale(spec, 1.5)
    bare = load_spec(write_spec(tmp_path, "bare", overrides={}, matrix=[], claims=[], seeds=[0],
                                rows=[{"id": "c", "config": NSGAN_CONFIG}]))
    with pytest.raises(SpecError, match="row\\(s\\) c take trainer.max_steps from their config file"):
        with_length_scale(bare, 0.5)


def test_length_scale_refuses_runs_begun_at_another_length(tmp_path, capsys):
    """A run with a stopped record (or a checkpoint) at the spec's length is not retrained at the scaled one."""
    path = _spec(tmp_path, "begun", [{"id": "linear"}], [0, 1])
    folder = tmp_path / "results/begun/linear/seed1"
    folder.mkdir(parents=True)
    write_json_atomic({"status": "stopped", "generator_steps": 7}, folder / "metrics.json")
    with pytest.raises(SystemExit):
        main(["reproduce", str(path), "--devices", "1", "--length-scale", "0.5"])
    assert "--length-scale trains only runs not started yet; 1 begun at another length: linear/seed1" in \
        capsys.readouterr().err
    assert not (tmp_path / "results/begun/linear/seed0").exists()  # refused before anything trained


def test_a_failed_extension_leaves_the_finished_run_and_extends_again(tmp_path, capsys):
    """An extension whose process fails (here: a checkpoint the resume refuses) leaves the finished shorter run's
    results as they were (record, training log, figures); the runner says why it failed; the next ``--rerun-stale``
    extends the run again rather than retraining it from step 0."""
    rows = [{"id": "const", "overrides": CONSTANT}]
    main(["reproduce", str(_spec(tmp_path, "ext", rows, [0])), "--devices", "1"])
    folder = tmp_path / "results/ext/const/seed0"
    before = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert Path("metrics.json") in before and Path("train_log.csv") in before
    final = tmp_path / "runs/tables/ext/const/seed0/final_state/last.ckpt"
    good = final.read_bytes()
    final.unlink()
    final.write_bytes(b"not a checkpoint")  # the extension's resume fails on it
    longer = _spec(tmp_path, "ext", rows, [0], **{"trainer.max_steps": 40})
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["reproduce", str(longer), "--devices", "1", "--rerun-stale"])
    out = capsys.readouterr().out
    assert "const/seed0 (extending from step 20)" in out and "failed const/seed0" in out
    assert "is not a readable PyTorch file" in out
    after = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert {k: v for k, v in after.items() if k.parts[0] != "in_progress"} == before  # the finished run, untouched
    assert (folder / "in_progress/extension.json").is_file()
    final.unlink()
    final.write_bytes(good)  # mended: the next --rerun-stale extends the run again (not a retraining from step 0)
    main(["reproduce", str(longer), "--devices", "1", "--rerun-stale", "--dry-run", "--check-configs"])
    assert "const/seed0: trainer.max_steps: 20 → 40 -> extends from 20" in capsys.readouterr().out

"""tools/collect_results.py: a queue checkout's finished runs replace this checkout's, checkpoints follow the queue."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script


def _run(root: Path, rel: str, status: str | None, value: int = 0, in_progress: bool = False) -> Path:
    folder = root / "results" / "t" / rel
    folder.mkdir(parents=True, exist_ok=True)
    if status is not None:
        (folder / "metrics.json").write_text(json.dumps({"status": status, "metrics": {"m": value}}))
    if in_progress:
        (folder / "in_progress").mkdir(exist_ok=True)
        (folder / "in_progress" / "progress.json").write_text(json.dumps({"generator_steps": value}))
    return folder


def test_finished_runs_replace_differing_ones_and_checkpoints_follow_the_queue(tmp_path):
    tool = load_script("tools/collect_results.py")
    queue, here = tmp_path / "queue", tmp_path / "here"
    _run(queue, "a/seed0", "finished", 2)  # retrained: differs from here's
    _run(here, "a/seed0", "finished", 1)
    _run(queue, "a/seed1", "finished", 1, in_progress=True)  # the same in both, being trained again in the queue
    _run(here, "a/seed1", "finished", 1)
    _run(queue, "a/seed2", "failed", 3)  # not done: not brought
    _run(queue, "b/seed0", "diverged", 4)  # a diverged run is a result
    _run(here, "b/ensemble_0_1", None, 5, in_progress=True)  # its job finished in the queue: gone there
    _run(queue, "c/ensemble_0_1", None, 7, in_progress=True)  # under way
    lines = tool.collect(queue, here, "t")
    assert lines == ["copied results/t/a/seed0", "copied results/t/b/seed0",
                     "removed results/t/b/ensemble_0_1/in_progress (not in the queue any more)"]
    assert json.loads((here / "results/t/a/seed0/metrics.json").read_text())["metrics"]["m"] == 2
    assert not (here / "results/t/a/seed2").exists() and not (here / "results/t/b/seed0/in_progress").exists()
    assert not (here / "results/t/c").exists()
    assert tool.collect(queue, here, "t") == []  # nothing left to bring
    assert tool.collect(queue, here, "t", in_progress=True) == ["copied results/t/a/seed1/in_progress",
                                                                 "copied results/t/c/ensemble_0_1/in_progress"]
    assert json.loads((here / "results/t/c/ensemble_0_1/in_progress/progress.json").read_text()) == {
        "generator_steps": 7}


def _state(folder: Path, steps: int) -> None:
    (folder / "final_state").mkdir(parents=True, exist_ok=True)
    (folder / "final_state" / "progress.json").write_text(json.dumps({"generator_steps": steps}))


def test_committed_final_states_follow_the_queue(tmp_path):
    """A finished run's final state (``commit_final_states``) comes with its folder; an ensemble job's comes when it
    differs and goes when the queue no longer has it."""
    tool = load_script("tools/collect_results.py")
    queue, here = tmp_path / "queue", tmp_path / "here"
    _state(_run(queue, "a/seed0", "finished", 2), 2)
    _state(_run(queue, "b/ensemble_0_1", None), 3)
    _state(_run(here, "b/ensemble_0_1", None), 1)  # an older state of the same job: replaced
    _state(_run(here, "c/ensemble_0_1", None), 4)  # its row was retrained in the queue: gone there
    assert tool.collect(queue, here, "t") == ["copied results/t/a/seed0", "copied results/t/b/ensemble_0_1/final_state",
                                              "removed results/t/c/ensemble_0_1/final_state (not in the queue any more)"]
    for rel, steps in (("a/seed0", 2), ("b/ensemble_0_1", 3)):
        assert json.loads((here / "results/t" / rel / "final_state/progress.json").read_text())["generator_steps"] == steps
    assert tool.collect(queue, here, "t") == []

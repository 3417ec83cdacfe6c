"""The metric registry, the run record, and the final evaluation running the configured families."""
from __future__ import annotations

import json

import pytest

from repro.cli import main
from repro.metrics import registry
from repro.record import DONE, RECORD_FILE, Status, read_record, status_of, write_record

RING = "configs/ring8/nsgan.yaml"
SHORT = ["--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", "--evaluation.n_samples", "200"]


@pytest.mark.parametrize("key, family", [
    ("modes_2500", "toy_modes"), ("reverse_kl_200", "toy_modes"), ("high_quality_2500", "toy_modes"), ("jsd_2500", "toy_modes"),
    ("fid10k_train_classifier", "image"), ("fid5k_train10k_inception", "image"), ("kid5k_test_classifier_std", "image"),
    ("is50k_inception", "image"), ("modes26k_classifier", "stacked_modes"), ("kl26k_classifier", "stacked_modes"),
    ("fid", None), ("modes", None), ("is5k", None), ("seconds_per_generator_step", None),
])
def test_each_record_key_belongs_to_one_family(key, family):
    found = registry.family_of_key(key)
    assert (found.name if found else None) == family
    assert sum(f.writes(key) for f in registry.families()) == (family is not None)


def test_a_family_is_registered_once_and_unknown_names_list_the_registered():
    with pytest.raises(ValueError, match="'image' is registered twice"):
        registry.register_metric("image", keys=("x",), forms="x", applies=lambda dm: True, compute="m:f")
    with pytest.raises(ValueError, match="unknown metric family 'fid'; registered: toy_modes .*; image .*; stacked_modes"):
        registry.family("fid")


def test_record_status_atomic_write_and_tolerant_read(tmp_path):
    path = write_record({"status": Status.DIVERGED.value, "generator_steps": 3}, tmp_path / "run")
    assert path.name == RECORD_FILE and not list(path.parent.glob("*.tmp"))
    assert json.loads(path.read_text())["status"] == "diverged"
    assert status_of(read_record(tmp_path / "run")) is Status.DIVERGED and Status.DIVERGED in DONE
    path.write_text('{"status": "finished", "metr')  # a writer killed mid-file (not by write_record)
    assert read_record(tmp_path / "run") is None and status_of(None) is None
    assert status_of({"status": "paused"}) is None and Status.FAILED not in DONE


def test_evaluation_runs_the_configured_families(run_dir):
    """Default: the families that apply to the data (mode metrics on ring8); `evaluation.metrics` names them."""
    main(["fit", "--config", RING, *SHORT, "--trainer.default_root_dir", "a", "--trainer.logger.init_args.save_dir", "a"])
    (record,) = [json.loads(p.read_text()) for p in (run_dir / "a").rglob(RECORD_FILE)]
    assert set(record["metrics"]) == {"modes_200", "high_quality_200", "reverse_kl_200", "jsd_200"}
    assert record["protocols"]["modes_200"]["n_generated"] == 200
    main(["fit", "--config", RING, *SHORT, "--evaluation.metrics", "[]", "--trainer.logger.init_args.save_dir", "b"])
    (record,) = [json.loads(p.read_text()) for p in (run_dir / "b").rglob(RECORD_FILE)]
    assert record["status"] == "finished" and "metrics" not in record


@pytest.mark.parametrize("metrics, needle", [
    ('["fid"]', "evaluation.metrics: unknown metric family 'fid'; registered: toy_modes"),
    ('["image"]', "evaluation.metrics: image cannot measure data set 'ring8'"),
])
def test_configured_family_errors_are_one_line_before_training(run_dir, capsys, metrics, needle):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", RING, *SHORT, "--evaluation.metrics", metrics])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert needle in err
    assert not list(run_dir.rglob(RECORD_FILE))

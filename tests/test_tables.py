"""Table specs, the grid runner (subprocess per run, resume after a kill) and the aggregated page."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from repro import REPO_ROOT
from repro.cli import main
from repro.record import read_json, write_json_atomic
from repro.tables import traces
from repro.tables.compute import Process, compute_line, hours_minutes, processes
from repro.tables.correlate import correlate, fit
from repro.tables.curves import convergence
from repro.tables.plan import Run, is_done, plan, read_records
from repro.tables.report import _seed_noise, aggregate, claim_verdict, format_cell, unreported_columns, write_report
from repro.tables import execute, runner
from repro.tables.runner import source_state
from repro.tables.spec import Claim, SpecError, load_spec

REPRO_ROOT_CONFIG = REPO_ROOT / "configs/ring8/nsgan.yaml"
TINY_RUN = {"trainer.max_steps": 4, "data.num_samples": 256, "data.batch_size": 64, "samples.every_n_steps": 0,
            "evaluation.n_samples": 200, "trainer.log_every_n_steps": 2}


def write_spec(root: Path, name: str = "tiny", **changes: object) -> Path:
    """A 2-row x 2-seed table over the committed ring8 configs, at tiny settings."""
    spec = {
        "title": "Tiny", "paper": "PacGAN", "table": "Table 1", "scale": "4 generator steps", "seeds": [0, 1],
        "overrides": TINY_RUN,
        "columns": [
            {"key": "modes_200", "label": "modes", "protocol": "200 samples", "format": ".1f",
             "paper_protocol": "2,500 samples"},
            {"key": "high_quality_200", "label": "HQ %", "protocol": "200 samples", "scale": 100},
        ],
        "matrix": [{"vars": {"variant": ["nsgan", "lsgan"]}, "id": "{variant}", "group": "{variant}",
                    "config": str(REPO_ROOT / "configs/ring8/{variant}.yaml")}],
        "claims": [{"text": "LSGAN covers more modes", "source": "none", "a": "lsgan:modes_200:mean", "op": ">",
                    "b": "nsgan:modes_200:mean"}],
        "panels": [{"image": "samples/final.png"}],
    }
    spec.update(changes)
    path = root / "paper_tables" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    return path


def test_matrix_expands_rows_with_their_overrides(tmp_path):
    spec = load_spec(write_spec(tmp_path, matrix=[{
        "vars": {"variant": ["nsgan", "wgan"], "set": ["ring8", "grid25"]}, "id": "{variant}-{set}",
        "config": str(REPO_ROOT / "configs/ring8/{variant}.yaml"), "overrides": {"data.dataset": "{set}"}}],
        claims=[]))
    assert [r.id for r in spec.rows] == ["nsgan-ring8", "nsgan-grid25", "wgan-ring8", "wgan-grid25"]
    assert spec.row("wgan-grid25").overrides == {"data.dataset": "grid25"}
    assert spec.row("wgan-grid25").config.name == "wgan.yaml"
    args = Run(spec, spec.row("wgan-grid25"), 1).fit_args()
    assert args[args.index("--data.dataset") + 1] == "grid25"
    assert args[args.index("--seed_everything") + 1] == "1"
    assert args[args.index("--trainer.max_steps") + 1] == "4"


def test_matrix_mapping_values_zip_settings(tmp_path):
    """A mapping-valued variable keeps related values together (SN-GAN's settings A-F)."""
    settings = [{"name": "A", "lr": 1e-4, "n_dis": 5}, {"name": "C", "lr": 2e-4, "n_dis": 1}]
    spec = load_spec(write_spec(tmp_path, claims=[], matrix=[{
        "vars": {"s": settings}, "id": "sn-{s[name]}", "config": str(REPRO_ROOT_CONFIG),
        "overrides": {"model.init_args.lr_d": "{s[lr]}", "model.init_args.n_dis": "{s[n_dis]}"}}]))
    assert [r.id for r in spec.rows] == ["sn-A", "sn-C"]
    assert spec.row("sn-C").overrides == {"model.init_args.lr_d": "0.0002", "model.init_args.n_dis": "1"}


def test_missing_config_is_one_clear_error_before_training(tmp_path, capsys):
    path = write_spec(tmp_path, matrix=[], rows=[
        {"id": "ok", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml")},
        {"id": "broken", "config": "configs/ring8/no_such_variant.yaml"}], claims=[])
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'broken'" in err and "no_such_variant.yaml" in err and "does not exist" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("change, needle", [
    ({"colums": []}, "unknown key 'colums'; valid:"),
    ({"rows": [{"id": "x", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"),
                "published": {"modes_200": {"value": 6.3}}}], "matrix": [], "claims": []}, "'value' and 'source'"),
    ({"claims": [{"text": "t", "source": "s", "a": "nsgan:fid:mean", "op": ">", "b": 1}]}, "row:column:stat"),
    ({"matrix": [{"vars": {"v": ["nsgan"]}, "id": "{v}", "config": "configs/ring8/{variant}.yaml"}]},
     "not a matrix variable"),
])
def test_invalid_specs_name_the_offending_key(tmp_path, change, needle):
    with pytest.raises(SpecError, match=None) as exc:
        load_spec(write_spec(tmp_path, **change))
    assert needle in str(exc.value)


def test_override_that_does_not_parse_fails_before_training(tmp_path, capsys):
    path = write_spec(tmp_path, overrides={**TINY_RUN, "model.init_args.no_such_arg": 1})
    with pytest.raises(SystemExit):
        main(["reproduce", str(path)])
    err = capsys.readouterr().err
    assert "row 'nsgan'" in err and "no_such_arg" in err
    assert not (tmp_path / "runs").exists()


def _fake_record(run: Run, status: str, modes: float | None = None) -> None:
    run.results_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "metrics": {} if modes is None else {"modes_200": modes, "high_quality_200": 0.5}}
    if modes is not None:  # flat curves: the claims' verdicts are made (a claim needs a flattened curve)
        record["curves"] = {key: [[step, value] for step in (10, 20, 36, 40)] for key, value in record["metrics"].items()}
    (run.results_dir / "metrics.json").write_text(json.dumps(record))


def test_aggregate_mean_std_counts_and_truncated_files(tmp_path):
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2], rows=[
        {"id": "nsgan", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"),
         "published": {"modes_200": {"value": "6.3 ± 0.5", "source": "PacGAN Table 1"}}}],
        matrix=[{"vars": {"v": ["lsgan"]}, "id": "{v}", "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml")}]))
    ns = {r.seed: r for r in plan(spec, only=["nsgan"])}
    ls = {r.seed: r for r in plan(spec, only=["lsgan"])}
    _fake_record(ns[0], "finished", 6)
    _fake_record(ns[1], "finished", 8)
    _fake_record(ns[2], "diverged")
    _fake_record(ls[0], "finished", 3)
    _fake_record(ls[1], "failed")
    ls[2].results_dir.mkdir(parents=True)
    (ls[2].results_dir / "metrics.json").write_text('{"status": "finished", "metr')  # killed mid-write
    assert read_json(ls[2].results_dir / "metrics.json") is None and not is_done(ls[2])
    assert is_done(ns[2]) and not is_done(ls[1])  # diverged is final; failed reruns
    cells = aggregate(spec)
    c = cells["nsgan"]["modes_200"]
    assert (c.n, c.mean, c.diverged) == (2, 7.0, 1) and c.std == pytest.approx(2 ** 0.5)
    c = cells["lsgan"]["modes_200"]
    assert (c.n, c.mean, c.std, c.failed, c.missing) == (1, 3.0, 0.0, 1, 1)
    assert claim_verdict(spec.claims[0], cells, spec)[1] == "one seed"  # lsgan's mean rests on one run
    one_run = write_report(spec).read_text()
    assert "3.0 (n=1; 1 failed, 1 not run)" in one_run and "| **one seed** |" in one_run  # its value, no "± 0.0"
    _fake_record(ls[1], "finished", 3)
    cells = aggregate(spec)  # lsgan 3 ± 0 (n=2) vs nsgan 7 ± 1.4: beyond two combined standard errors (2.0)
    assert claim_verdict(spec.claims[0], cells, spec)[1] == "does not hold"
    # a compared row holding runs of other settings (e.g. another length) gives no verdict, on the page too
    assert claim_verdict(spec.claims[0], cells, spec, stale_rows={"nsgan"})[1] == "stale runs"
    stale_page = write_report(spec, stale={"nsgan/seed0": ["trainer.max_steps: 2 → 4"]}).read_text()
    assert "| **stale runs** |" in stale_page and "| **does not hold** |" not in stale_page
    page = write_report(spec)
    text = page.read_text()
    assert "7.0 ± 1.4 (n=2; 1 diverged)" in text
    assert "6.3 ± 0.5 [1]" in text and "1. PacGAN Table 1" in text
    assert "3.0 ± 0.0 (n=2; 1 not run)" in text
    assert "> **Scale difference:** 4 generator steps" in text and "*Paper's protocol:* 2,500 samples" in text
    assert "**does not hold**" in text
    csv_lines = page.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[1].startswith("nsgan,nsgan,modes_200,6.3 ± 0.5,PacGAN Table 1,7.0,")
    main(["reproduce", str(spec.path), "--report-only"])  # same page, nothing trains (runs stay missing)
    assert page.read_text() == text  # a pure function of spec + records
    assert not (tmp_path / "runs").exists()


def test_page_shows_the_papers_statistic_and_checks_claims_in_page_units(tmp_path):
    """s.e. beside s.e. (the column states the paper's statistic and n), claims in percent for a percent
    column, best(<group>) found from the data, "within noise" under the column's noise floor."""
    nets = {"config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "group": "ns"}
    spec = load_spec(write_spec(
        tmp_path, seeds=[0, 1], matrix=[],
        columns=[{"key": "modes_200", "label": "modes", "protocol": "p", "format": ".1f", "paper_stat": "se",
                  "paper_n": 10, "better": "higher", "noise_floor": 1.5},
                 {"key": "high_quality_200", "label": "HQ %", "protocol": "p", "scale": 100, "format": ".1f"}],
        rows=[{"id": "slow", **nets, "published": {"modes_200": {"value": "6.3 ± 0.5", "source": "PacGAN"}}},
              {"id": "fast", **nets}, {"id": "other", **nets, "group": "other"}],
        claims=[{"text": "HQ above 40%", "source": "s", "a": "slow:high_quality_200:mean", "op": ">", "b": 40},
                {"text": "best ns beats other", "source": "s", "a": "best(ns):modes_200:mean", "op": ">",
                 "b": "other:modes_200:mean"},
                {"text": "fast beats slow", "source": "s", "a": "fast:modes_200:mean", "op": ">",
                 "b": "slow:modes_200:mean"},
                {"text": "slow beats other", "source": "s", "a": "slow:modes_200:mean", "op": ">",
                 "b": "other:modes_200:mean"},
                {"text": "slow beats 4.5", "source": "s", "a": "slow:modes_200:mean", "op": ">", "b": 4.5}]))
    for row, values in (("slow", (6, 8)), ("fast", (8, 8)), ("other", (5, 5))):
        for run, modes in zip(plan(spec, only=[row]), values):
            _fake_record(run, "finished", modes)  # high quality 0.5 each: 50 %
    cells = aggregate(spec)
    assert cells["slow"]["modes_200"].se == pytest.approx(1.0)  # std sqrt(2) / sqrt(2)
    assert claim_verdict(spec.claims[0], cells, spec) == ("mean(slow, high_quality_200) = 50 > 40", "holds")
    shown, verdict = claim_verdict(spec.claims[1], cells, spec)
    assert "mean(fast, the best of ns, modes_200) = 8" in shown and verdict == "holds"  # fast (8) > slow (7)
    assert claim_verdict(spec.claims[2], cells, spec)[1] == "within noise"  # 8 vs 7 under a floor of 1.5
    # 7 ± 1 (s.e.) vs 5 ± 0: over the floor, but within two combined standard errors over seeds; 7 vs 4.5 is not
    assert claim_verdict(spec.claims[3], cells, spec) == (
        "mean(slow, modes_200) = 7 > mean(other, modes_200) = 5 (noise floor 1.5) (difference 2; 2 combined s.e. 2)",
        "within noise")
    assert claim_verdict(spec.claims[4], cells, spec)[1] == "holds"
    # stds: slow's 1.41 (n=2, s.e. 1.0 by std / sqrt(2 (n - 1))) vs fast's 0: within two s.e.
    spread = Claim(text="t", source="s", a="slow:modes_200:std", op=">", b="fast:modes_200:std")
    assert claim_verdict(spread, cells, spec) == (
        "std(slow, modes_200) = 1.41 > std(fast, modes_200) = 0 (noise floor 1.5)", "within noise")  # under the floor
    compared = [("slow", "modes_200", "mean"), ("fast", "modes_200", "mean")]
    assert _seed_noise(spread, cells, spec, compared) == pytest.approx(2.0)
    text = write_report(spec).read_text()
    assert "| modes (paper, ± s.e., n=10) | modes (ours, ± s.e.) | HQ % |" in text
    assert "| slow | 6.3 ± 0.5 [1] | 7.0 ± 1.0 (n=2) | 50.0 ± 0.0 (n=2) |" in text  # HQ: std (no paper statistic)
    with pytest.raises(SpecError, match="needs column 'high_quality_200' to say which way is better"):
        load_spec(write_spec(tmp_path, name="bad", claims=[
            {"text": "t", "source": "s", "a": "best(nsgan):high_quality_200:mean", "op": ">", "b": 1}]))
    with pytest.raises(SpecError, match="paper_stat 'sem' is not valid; valid: std, se"):
        load_spec(write_spec(tmp_path, name="bad2", columns=[{"key": "modes_200", "protocol": "p", "paper_stat": "sem"}]))


def test_trace_draws_rows_on_shared_axes_from_train_logs(tmp_path):
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1], traces=[
        {"key": "conditioning/log_cond_mean", "rows": ["nsgan", "lsgan"], "label": "log cond"}]))
    for run in plan(spec):
        _fake_record(run, "finished", 6)
        (run.results_dir / "train_log.csv").write_text(
            "conditioning/log_cond_mean,step,train/d_loss\n2.0,0,\n,1,0.7\n" + f"{5 + run.seed},4,\n")
    text = write_report(spec).read_text()
    figure = tmp_path / "paper_tables" / "figures" / "tiny" / "trace_conditioning_log_cond_mean.png"
    assert figure.stat().st_size > 1000 and "(figures/tiny/trace_conditioning_log_cond_mean.png)" in text
    with pytest.raises(SpecError, match="traces\\[0\\]: rows must be row ids; unknown: wgan"):
        load_spec(write_spec(tmp_path, name="bad", traces=[{"key": "k", "rows": ["wgan"]}]))


def test_a_clock_time_over_kinds_of_machine_says_so(tmp_path):
    """A train_seconds cell whose seeds ran on two kinds of machine (another CPU ISA; a record without one) names
    how many, in the cell and once in the legend; a row timed on one kind says nothing of it."""
    seconds = {"key": "train_seconds", "label": "training s", "protocol": "wall time"}
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2], columns=[seconds], claims=[]))
    machines = [{"cpu": "AMD EPYC", "cpu_isa": "AVX512"}, {"cpu": "AMD EPYC", "cpu_isa": "AVX512"},
                {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}]
    for run in plan(spec):
        run.results_dir.mkdir(parents=True)
        machine = machines[run.seed] if run.row.id == "nsgan" else machines[0]
        write_json_atomic({"status": "finished", "metrics": {}, "train_seconds": 100.0 + run.seed, "machine": machine},
                          run.results_dir / "metrics.json")
    cells, col = aggregate(spec), spec.columns[0]
    assert format_cell(cells["nsgan"]["train_seconds"], col) == "101 ± 1 (n=3; timed on 2 kinds of machine)"
    assert format_cell(cells["lsgan"]["train_seconds"], col) == "101 ± 1 (n=3)"
    del machines[2]["cpu_isa"]  # unrecorded: not taken to be either
    for run in plan(spec, only=["nsgan"]):
        write_json_atomic({"status": "finished", "metrics": {}, "train_seconds": 1.0, "machine": machines[run.seed]},
                          run.results_dir / "metrics.json")
    assert format_cell(aggregate(spec)["nsgan"]["train_seconds"], col) == "1 ± 0 (n=3; timed on 2 kinds of machine)"
    page = write_report(spec).read_text()
    assert page.count("kinds of machine") == 2 and "timed on 2 kinds of machine)" in page


def test_a_trace_column_reads_the_end_of_a_logged_series_and_judges_its_curve(tmp_path):
    """A column with ``trace_last`` takes each run's value from its train_log.csv series (the mean of the last N
    points), and the row's convergence from that series: a flat series converges, a rising one does not."""
    ratio = {"key": "w1/ratio", "label": "ratio", "protocol": "critic / exact W1", "trace_last": 3}
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1], columns=[ratio], claims=[
        {"text": "nsgan's ratio is above lsgan's", "source": "none", "a": "nsgan:w1/ratio:mean", "op": ">",
         "b": "lsgan:w1/ratio:mean"}]))
    for run in plan(spec):
        _fake_record(run, "finished", 6)
        steps = range(0, 101, 10)
        values = [0.5 + 0.1 * run.seed for _ in steps] if run.row.id == "nsgan" else [0.01 * s for s in steps]
        (run.results_dir / "train_log.csv").write_text(
            "w1/ratio,step\n" + "".join(f"{v},{s}\n" for s, v in zip(steps, values)) + ",101\n")  # 101: not logged
    cells = aggregate(spec)
    assert cells["nsgan"]["w1/ratio"].values == pytest.approx([0.5, 0.6])
    assert cells["lsgan"]["w1/ratio"].values == pytest.approx([0.9, 0.9])  # mean of 0.8, 0.9, 1.0
    flat = convergence(spec, read_records(spec))
    assert flat["nsgan"]["w1/ratio"] == "flat" and flat["lsgan"]["w1/ratio"] == "moving"
    assert claim_verdict(spec.claims[0], cells, spec, flat)[1] == "not converged"
    assert claim_verdict(spec.claims[0], cells, spec, {"nsgan": {"w1/ratio": "flat"}, "lsgan": {"w1/ratio": "flat"}}
                         )[1] == "does not hold"
    (spec.results_dir / "nsgan" / "seed1" / "train_log.csv").write_text("step,train/d_loss\n5,0.7\n")  # not logged
    cell = aggregate(spec)["nsgan"]["w1/ratio"]
    assert (cell.values, cell.unreported, cell.missing) == ([0.5], 1, 0)
    assert format_cell(cell, spec.columns[0]) == "0.5 (n=1; 1 not reported)"
    for bad, message in (({"trace_last": -1}, "trace_last must be >= 0"),
                         ({"curve_x": "train_seconds"}, "a trace column .* is drawn against generator step"),
                         ({"trace_last": 0}, "column 'w1/ratio' is no registered metric")):
        with pytest.raises(SpecError, match=message):
            load_spec(write_spec(tmp_path, name="bad", columns=[{**ratio, **bad}], claims=[]))


def test_per_seed_trace_draws_one_line_per_seed_and_one_legend_entry_per_row(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2], traces=[
        {"key": "conditioning/log_cond_mean", "rows": ["nsgan", "lsgan"], "per_seed": True}]))
    for run in plan(spec):
        _fake_record(run, "finished", 6)
        (run.results_dir / "train_log.csv").write_text(f"conditioning/log_cond_mean,step\n2,0\n{run.seed},4\n")
    figures = []
    monkeypatch.setattr(traces, "save_figure", lambda fig, out: figures.append(fig) or out)
    traces.draw_trace(spec, spec.traces[0], tmp_path / "t.png")
    ax = figures[0].axes[0]
    assert len(ax.lines) == 6  # 2 rows x 3 seeds, no mean line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nsgan (n=3, one line per seed)",
                                                                    "lsgan (n=3, one line per seed)"]
    assert [line.get_color() for line in ax.lines] == ["C0"] * 3 + ["C1"] * 3
    with pytest.raises(SpecError, match=r"traces\[0\]: per_seed must be true or false, got 'yes'"):
        load_spec(write_spec(tmp_path, name="bad", traces=[{"key": "k", "rows": ["nsgan"], "per_seed": "yes"}]))


def test_pearson_and_spearman_with_p_values_on_four_points():
    """r by hand: x = 1..4, y = 2, 1, 4, 3: sum dx dy = 3, sum dx^2 = sum dy^2 = 5, r = 0.6 (the ranks are the
    values, so rho = 0.6 too); t = r sqrt(2 / (1 - r^2)) on 2 degrees of freedom has the two-sided p-value
    1 - t / sqrt(2 + t^2) = 0.4."""
    f = fit([1, 2, 3, 4], [2, 1, 4, 3])
    assert (f.n, f.pearson, f.spearman) == (4, pytest.approx(0.6), pytest.approx(0.6))
    t = 0.6 * (2 / (1 - 0.36)) ** 0.5
    assert f.pearson_p == pytest.approx(1 - t / (2 + t * t) ** 0.5) == pytest.approx(0.4)
    assert f.spearman_p == pytest.approx(0.4)
    assert fit([1, 2, 3], [5, 5, 5]).pearson is None and fit([1, 2], [1, 2]).spearman is None  # constant, n < 3


CORR_CLAIM = {"text": "cond goes with HQ", "source": "Odena et al. 2018", "a": "corr(cond_hq):pearson", "op": ">",
              "b": 0}


def _corr_spec(tmp_path: Path, name: str = "tiny", claims: list | None = None, **corr: object) -> Path:
    correlation = {"id": "cond_hq", "trace": "conditioning/log_cond_mean", "column": "high_quality_200",
                   "rows": ["nsgan", "lsgan"], "last": 2, **corr}
    return write_spec(tmp_path, name=name, seeds=[0, 1, 2, 3, 4], correlations=[correlation],
                      claims=[CORR_CLAIM] if claims is None else claims)


def test_correlation_of_trace_end_with_final_metric_equals_scipy(tmp_path):
    """Hand-made records: x = the mean of each run's last 2 logged trace values, y = its final metric in page units
    (percent); pooled and per-row r, rho, p as numpy / scipy give them directly; the page's table, the scatter
    figure and the claims' verdicts (holds; a row's weak correlation "not significant"; "not converged")."""
    from scipy import stats

    claims = [CORR_CLAIM, {**CORR_CLAIM, "a": "corr(cond_hq, lsgan):spearman", "op": "<"}]
    spec = load_spec(_corr_spec(tmp_path, claims=claims))
    # x per run; nsgan's metric follows x closely, lsgan's three runs are out of order (rho 0.5, p 2/3)
    xs = {"nsgan": [4, 6, 8, 10, 12], "lsgan": [5, 7, 9]}
    hqs = {"nsgan": [0.101, 0.148, 0.2015, 0.25, 0.299], "lsgan": [0.175, 0.125, 0.225]}
    expected: dict[str, list[tuple[float, float]]] = {"nsgan": [], "lsgan": []}
    for run in plan(spec):
        if (run.row.id, run.seed) == ("lsgan", 4):
            _fake_record(run, "diverged")  # not a point, not counted as left out
            continue
        run.results_dir.mkdir(parents=True, exist_ok=True)
        if (run.row.id, run.seed) == ("lsgan", 3):  # finished without a train log: left out
            _fake_record(run, "finished", 6)
            continue
        x, hq = xs[run.row.id][run.seed], hqs[run.row.id][run.seed]
        logged = [3.0, 20.0, x - 1.5, x + 1.5]  # the mean of the last 2 is x
        record = {"status": "finished", "metrics": {"modes_200": 6, "high_quality_200": hq},
                  "curves": {"high_quality_200": [[10, hq], [20, hq], [36, hq], [40, hq]]}}  # flattened
        (run.results_dir / "metrics.json").write_text(json.dumps(record))
        log = "conditioning/log_cond_mean,step,train/d_loss\n" + "".join(
            f"{v},{10 * i},\n,{10 * i + 1},0.5\n" for i, v in enumerate(logged))
        (run.results_dir / "train_log.csv").write_text(log)
        expected[run.row.id].append((x, 100 * hq))
    result = correlate(spec, read_records(spec))["cond_hq"]
    assert result.skipped == 1 and len(result.points) == 8
    for row, pairs in (*expected.items(), (None, expected["nsgan"] + expected["lsgan"])):
        x, y = np.array(pairs).T
        f = result.fit(row)
        assert f.n == len(x)
        assert f.pearson == pytest.approx(np.corrcoef(x, y)[0, 1])
        assert f.pearson_p == pytest.approx(stats.pearsonr(x, y)[1])
        assert (f.spearman, f.spearman_p) == pytest.approx(tuple(stats.spearmanr(x, y)))
    pooled, ls = result.fit(), result.fit("lsgan")
    assert pooled.pearson_p < 0.05 < ls.spearman_p
    cells = aggregate(spec)
    assert claim_verdict(spec.claims[0], cells, spec) == (
        f"pearson r(cond_hq, pooled over nsgan, lsgan) = {pooled.pearson:.3g} (p = {pooled.pearson_p:.3g}, n = 8) > 0",
        "holds")
    assert claim_verdict(spec.claims[1], cells, spec)[1] == "not significant"
    assert claim_verdict(spec.claims[0], cells, spec, flat={"lsgan": {"high_quality_200": "moving"}})[1] == "not converged"
    assert claim_verdict(spec.claims[0], cells, spec, stale_rows={"nsgan"})[1] == "stale runs"
    text = write_report(spec).read_text()
    assert "## Correlations across runs" in text and "(figures/tiny/corr_cond_hq.png)" in text
    assert (f"| `cond_hq`: x = conditioning/log_cond_mean (mean of the last 2 logged values), y = final HQ % | "
            f"pooled: nsgan, lsgan | 8 | {pooled.pearson:.3f} (p = {pooled.pearson_p:.3g}) |") in text
    assert f"|  | lsgan | 3 | {ls.pearson:.3f} (p = {ls.pearson_p:.3g}) | {ls.spearman:.3f} (p = 0.667) |" in text
    assert "| | left out: 1 finished run(s) without 2 logged trace point(s) or a finite metric |" in text
    assert "| **holds** |" in text and "| **not significant** |" in text
    assert (tmp_path / "paper_tables" / "figures" / "tiny" / "corr_cond_hq.png").stat().st_size > 1000


@pytest.mark.parametrize("claim, corr, needle", [
    ({"a": "corr(nope):pearson"}, {}, "must be 'corr(<id>):<stat>' (pooled over the correlation's rows) or "
                                      "'corr(<id>, <row>):<stat>' with a known correlation id (cond_hq) and stat "
                                      "(pearson, spearman)"),
    ({"a": "corr(cond_hq):kendall"}, {}, "and stat (pearson, spearman)"),
    ({"a": "corr(cond_hq, wgan):pearson"}, {}, "row 'wgan' is not one of correlation 'cond_hq''s rows (nsgan, lsgan)"),
    ({"b": 0.3}, {}, "needs op '<' or '>' and b: 0"),
    ({"op": "~"}, {}, "needs op '<' or '>' and b: 0"),
    ({"a": "nsgan:modes_200:mean", "b": "corr(cond_hq):pearson"}, {}, "a correlation goes on side a"),
    ({}, {"column": "fid"}, "correlations[0]: column 'fid' is not a column of the table; valid: high_quality_200, "
                            "modes_200"),
    ({}, {"last": 0}, "last must be >= 1"),
    ({}, {"rows": ["wgan"]}, "correlations[0]: rows must be row ids; unknown: wgan"),
])
def test_bad_correlation_reference_is_one_clear_error(tmp_path, claim, corr, needle):
    with pytest.raises(SpecError) as exc:
        load_spec(_corr_spec(tmp_path, claims=[{**CORR_CLAIM, **claim}], **corr))
    assert needle in str(exc.value)


def test_column_no_run_reports_is_flagged_on_the_page(tmp_path, capsys):
    """A column key that no finished record has (a spec typo) is named, with the keys the runs do report."""
    spec = load_spec(write_spec(tmp_path, seeds=[0]))
    assert unreported_columns(spec) == {}  # nothing finished yet: nothing to judge
    (run,) = plan(spec, only=["nsgan"])
    run.results_dir.mkdir(parents=True)
    (run.results_dir / "metrics.json").write_text(json.dumps({"status": "finished", "metrics": {"modes_2500": 8}}))
    assert unreported_columns(spec) == {"modes_200": ["modes_2500"], "high_quality_200": ["modes_2500"]}
    text = write_report(spec).read_text()
    assert "**Column `modes_200` is in no finished run's record** (they report: `modes_2500`)" in text
    assert "column 'high_quality_200' is in no finished run's metrics" in capsys.readouterr().out
    _fake_record(run, "finished", 6)
    assert unreported_columns(spec) == {} and "is in no finished run" not in write_report(spec).read_text()


CPU = {"cpu": "Test CPU 9000", "logical_cores": 2, "torch_threads": 1, "accelerator": "cpu", "accelerator_count": 0}
GPU = {"cpu": "Test CPU 9000", "cpu_isa": "AVX512", "logical_cores": 16, "torch_threads": 4,
       "accelerator": "NVIDIA H200", "accelerator_count": 1}


def test_compute_line_counts_an_ensemble_once_and_names_old_records(tmp_path):
    """Two members of one seed ensemble (one process: its wall time once, its longest member clock), a single run on
    another machine (with its kernel ISA, which records before 4 Dec lack), an old record without a machine block; a
    failed run is not counted. Sums by hand below."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2]))
    runs = {run.name: run for run in plan(spec)}
    ensemble = {"size": 2, "seeds": [0, 1], "command": "repro fit ..."}
    for name, record in {
        "nsgan/seed0": {"wall_seconds": 3600.0, "train_seconds": 3000.0, "machine": CPU, "ensemble": ensemble},
        "nsgan/seed1": {"wall_seconds": 3600.0, "train_seconds": 3010.0, "machine": CPU, "ensemble": ensemble},
        "nsgan/seed2": {"wall_seconds": 1800.0, "train_seconds": 1700.0, "machine": GPU, "status": "diverged"},
        "lsgan/seed0": {"wall_seconds": 720.0, "train_seconds": 630.0},  # written before the machine block
        "lsgan/seed1": {"wall_seconds": 99999.0, "train_seconds": 99999.0, "status": "failed", "machine": CPU},
    }.items():  # lsgan/seed2: not run
        runs[name].results_dir.mkdir(parents=True)
        (runs[name].results_dir / "metrics.json").write_text(json.dumps({"status": "finished", **record}))
    cpu_text = "Test CPU 9000, 2 logical cores, 1 torch thread, no GPU"
    gpu_text = "Test CPU 9000 (AVX512 kernels), 16 logical cores, 4 torch threads, 1× NVIDIA H200"
    assert processes(read_records(spec)) == [Process("nsgan/seeds 0, 1", 3600.0, 3010.0, cpu_text, False),
                                             Process("nsgan/seed2", 1800.0, 1700.0, gpu_text, False),
                                             Process("lsgan/seed0", 720.0, 630.0, None, False)]
    line = compute_line(read_records(spec))
    # wall: 3600 + 1800 + 720 = 6120 s = 1.7 h = 102 min; train: 3010 + 1700 + 630 = 5340 s = 89 min
    assert line.startswith("3 training processes (a seed ensemble is one process); summed process wall time "
                           "(training + evaluation) 1.7 core-hours = 1:42 h:mm")
    assert "summed `train_seconds` 1:29 h:mm; the longest process 1:00 h:mm (`nsgan/seeds 0, 1`)." in line
    assert "not the table's elapsed time" in line
    assert (f"Machine: {cpu_text} (1 process); {gpu_text} (1 process); not recorded for 1 process (records from "
            "before the field).") in line
    assert line.endswith(" Not counted: 1 unfinished run (in progress, failed or stopped).")
    assert hours_minutes(59 * 60 + 29) == "0:59" and hours_minutes(10 * 3600 + 5 * 60) == "10:05"
    text = write_report(spec).read_text()
    assert "**Runs:** 3 of 6 finished, 1 diverged, 1 failed; 1 not run yet" in text
    assert f"\n\n**Compute:** {line}\n\n" in text


def test_the_page_tells_runs_under_way_from_runs_not_started(tmp_path):
    """A run that left a checkpoint is "in progress", not "not run yet"; a finished run trained again (its checkpoint
    beside its record) is listed as such; the results README names the committed checkpoints only when there are."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2]))
    runs = {run.name: run for run in plan(spec)}
    for name, steps in {"nsgan/seed0": 3, "nsgan/seed1": 2}.items():
        runs[name].in_progress_dir.mkdir(parents=True)
        (runs[name].in_progress_dir / "progress.json").write_text(json.dumps({"generator_steps": steps, "max_steps": 4}))
    (runs["nsgan/seed0"].results_dir / "metrics.json").write_text(json.dumps({"status": "finished"}))
    page = write_report(spec).read_text()
    assert ("**Runs:** 1 of 6 finished, 0 diverged, 0 failed; 1 of the finished or diverged being trained again "
            "(retrained or extended; their records count until they end); 1 in progress; 4 not run yet") in page
    assert ("- `nsgan/seed0`: 3 of 4 generator updates (trained again; its finished record counts until then)\n"
            "- `nsgan/seed1`: 2 of 4 generator updates\n") in page
    readme = spec.results_dir / "README.md"
    assert "except the in-progress ones of long runs" in readme.read_text()
    for name in ("nsgan/seed0", "nsgan/seed1"):
        (runs[name].in_progress_dir / "progress.json").unlink()
    write_report(spec)
    assert "in-progress" not in readme.read_text() and "**Runs under way**" not in write_report(spec).read_text()


def test_source_state_dirty_only_for_inputs(tmp_path):
    """A run is marked dirty when code, configs or specs differ from HEAD, not when a generated page does."""
    for rel in ("repro/a.py", "configs/a.yaml", "paper_tables/t.yaml", "paper_tables/t.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    assert source_state(tmp_path)["git_dirty"] is False
    (tmp_path / "paper_tables/t.md").write_text("page\n")
    assert source_state(tmp_path)["git_dirty"] is False
    for rel in ("paper_tables/t.yaml", "configs/a.yaml", "repro/a.py"):
        (tmp_path / rel).write_text("changed\n")
        assert source_state(tmp_path)["git_dirty"] is True
        subprocess.run([*git, "checkout", "-q", "--", rel], check=True)


def test_chart_of_a_column_and_unknown_chart_column(tmp_path):
    """`charts: [key]` draws one bar chart (mean ± std over seeds per row) linked from the page; an unknown key is
    one SpecError naming the valid columns."""
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1], charts=["modes_200"]))
    for run, modes in zip(plan(spec, only=["nsgan"]), (6, 8)):
        _fake_record(run, "finished", modes)
    text = write_report(spec).read_text()
    chart = tmp_path / "paper_tables" / "figures" / "tiny" / "chart_modes_200.png"
    assert chart.stat().st_size > 1000 and "![chart_modes_200](figures/tiny/chart_modes_200.png)" in text
    with pytest.raises(SpecError, match="charts: unknown column 'modes'; valid: high_quality_200, modes_200"):
        load_spec(write_spec(tmp_path, name="bad", charts=["modes"]))


def _done_runs(root: Path) -> list[Path]:
    return [p for p in (root / "results" / "tiny").glob("*/seed*/metrics.json")
            if (read_json(p) or {}).get("status") == "finished"]


def test_table_end_to_end_resumes_after_kill(tmp_path, capsys, monkeypatch):
    """2 rows x 2 seeds through `repro reproduce --no-ensemble` (one process per run): kill after the first run,
    restart, nothing is redone. (Seed ensembles: tests/test_runner_ensemble.py.)"""
    path = write_spec(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "repro", "reproduce", str(path), "--devices", "1", "--no-ensemble"],
                            cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not _done_runs(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its child, mid-table
    proc.wait()
    first = _done_runs(tmp_path)
    assert len(first) == 1, proc.stderr.read().decode()[-2000:]
    first_bytes = first[0].read_bytes()

    main(["reproduce", str(path), "--devices", "2", "--no-ensemble"])
    out = capsys.readouterr().out
    assert "1 finished, 3 to run" in out
    assert first[0].read_bytes() == first_bytes  # not redone
    assert len(_done_runs(tmp_path)) == 4
    record = read_json(tmp_path / "results/tiny/lsgan/seed1/metrics.json")
    assert record["generator_steps"] == 4 and record["seed"] == 1
    assert record["config"]["trainer"]["max_steps"] == 4 and record["config"]["seed_everything"] == 1
    assert "--seed_everything 1" in record["command"] and record["versions"]["torch"]
    assert record["machine"]["torch_threads"] == 1 and record["machine"]["accelerator"] == "cpu"  # the child's
    assert (tmp_path / record["checkpoint"]).is_file() and record["checkpoint"].startswith("runs/")
    assert (tmp_path / "results/tiny/lsgan/seed1/samples/final.png").stat().st_size > 1000
    page = tmp_path / "paper_tables" / "tiny.md"
    text = page.read_text()
    assert "(n=2)" in text and "figures/tiny/nsgan_final.png" in text
    assert "**Compute:** 4 training processes" in text and "1 torch thread, no GPU (4 processes)." in text
    assert (tmp_path / "paper_tables/figures/tiny/lsgan_final.png").stat().st_size > 1000

    main(["reproduce", str(path)])  # everything finished: no training, same page
    assert "4 finished, 0 to run" in capsys.readouterr().out
    assert page.read_text() == text
    monkeypatch.chdir(tmp_path)
    main(["tables"])
    assert "tiny: Tiny [4/4 runs done]" in capsys.readouterr().out  # nothing stale, nothing left to run

    write_spec(tmp_path, overrides={**TINY_RUN, "trainer.max_steps": 6})  # the spec moves on: every record is stale
    main(["tables"])  # the new settings were never parsed: not checked, and said so
    assert "tiny: Tiny [4/4 runs done, 2 row(s) not checked for staleness" in capsys.readouterr().out
    main(["reproduce", str(path), "--dry-run", "--check-configs"])
    capsys.readouterr()
    main(["tables"])
    out = capsys.readouterr().out
    assert "tiny: Tiny [4/4 runs done, 4 stale; to run: ~" in out  # from the records' per-update cost
    assert "(`repro reproduce tiny --rerun-stale`)]" in out
    assert re.search(r"^    lsgan +2/2, 2 stale$", out, re.M)


@pytest.mark.parametrize("spec_path", sorted((REPO_ROOT / "paper_tables").glob("*.yaml")), ids=lambda p: p.stem)
def test_committed_specs_load(spec_path):
    """Every shipped spec validates: configs exist, published numbers have sources, claims name real cells."""
    spec = load_spec(spec_path)
    assert spec.rows and spec.columns and spec.scale
    for row in spec.rows:
        for pub in row.published.values():
            assert pub.source and pub.value and "NOT FOUND" not in pub.value


def _progress_steps(root: Path, table: str) -> int:
    record = read_json(root / "results" / table / "nsgan" / "seed0" / "in_progress" / "progress.json") or {}
    return record.get("generator_steps", 0)


def _descendants(pid: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every live process below ``pid``."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), (stat.parent / "cmdline").read_bytes().decode())
        except (OSError, IndexError, UnicodeDecodeError):
            continue
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        below = [(p, parent, cmd) for p, (pp, cmd) in table.items() if pp == parent]
        out += below
        frontier += [p for p, _, _ in below]
    return out


def _training(runner: int, processes: list[tuple[int, int, str]]) -> list[int]:
    """The training processes among the runner's ``processes``: not its multiprocessing helpers (the forkserver a
    CPU job is forked from, the resource tracker)."""
    return [p for p, parent, cmd in processes if parent != runner or "multiprocessing" not in cmd]


def _started_at(pid: int) -> float:
    """When a live process started, on the ``time.time()`` clock: its start in /proc (clock ticks after boot)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


def kill_runner_midway(root: Path, spec: Path, steps: Callable[[], int], total: int,
                       at: int = 60) -> tuple[int, int, float]:
    """Run ``repro reproduce spec`` on one device from ``root``, SIGKILL the runner (only the runner) once ``steps()``
    reaches ``at``, assert its training processes and helpers died with it (PDEATHSIG for a fresh child, a pidfd
    watch for one forked from the preloaded server, ``repro.tables.processes``); (the steps they had saved, runner
    pid, when the first training process started on the ``time.time()`` clock)."""
    proc = subprocess.Popen([sys.executable, "-m", "repro", "reproduce", str(spec), "--devices", "1"],
                            cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while steps() < at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    below = _descendants(proc.pid)
    children, training = [p for p, _, _ in below], _training(proc.pid, below)
    started = min(_started_at(c) for c in training) if training else 0.0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert training, proc.stderr.read().decode()[-2000:]
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{c}").exists() for c in children), "the training outlived its runner"
    stopped_at = steps()
    assert 0 < stopped_at < total, proc.stderr.read().decode()[-2000:]
    return stopped_at, proc.pid, started


def test_killed_run_continues_from_its_checkpoint_bit_identically(tmp_path, capsys, monkeypatch):
    """SIGKILL the runner (only the runner) mid-run: its training process gets SIGTERM (``kill_runner_midway``),
    writes its checkpoint and is gone within seconds; the next `repro reproduce` replaces the dead runner's lock and
    continues from the in-progress checkpoint (not from step 0), and the finished record (metrics, curve) and
    train log equal an uninterrupted run's. Its wall_seconds holds both processes: the killed one's from its start
    to its last checkpoint, at least, and at most to its death; plus the last one's as the runner timed it."""
    run = {**TINY_RUN, "trainer.max_steps": 160, "evaluation.curve_points": 4, "evaluation.tail_points": 2,
           "resumable.every_minutes": 0.001}
    matrix = [{"vars": {"variant": ["nsgan"]}, "id": "{variant}", "group": "{variant}",
               "config": str(REPO_ROOT / "configs/ring8/{variant}.yaml")}]
    killed = write_spec(tmp_path, "killed", overrides=run, matrix=matrix, seeds=[0], claims=[])
    whole = write_spec(tmp_path, "whole", overrides=run, matrix=matrix, seeds=[0], claims=[])
    stopped_at, runner_pid, child_started = kill_runner_midway(
        tmp_path, killed, lambda: _progress_steps(tmp_path, "killed"), total=160)
    child_gone = time.time()
    in_progress = tmp_path / "results/killed/nsgan/seed0/in_progress"
    to_checkpoint = (in_progress / "last.ckpt").stat().st_mtime - child_started  # the killed process's, to its save
    saved_count = read_json(in_progress / "progress.json")["wall_seconds"]
    timed: list[float] = []  # the runner's timing of each process it collects
    monkeypatch.setattr(runner, "collect", lambda job, code, wall, context: timed.append(wall) or
                        execute.collect(job, code, wall, context))
    assert not (tmp_path / "results/killed/nsgan/seed0/metrics.json").exists()
    assert not (tmp_path / "runs/tables/killed/nsgan/seed0/metrics.json").exists()  # stopped, not trained on
    assert (tmp_path / "results/killed/.runner.lock").exists()  # the dead runner's

    main(["reproduce", str(killed), "--devices", "1"])
    assert f"removed a stale lock of runner pid {runner_pid}" in capsys.readouterr().out
    main(["reproduce", str(whole), "--devices", "1"])
    capsys.readouterr()
    a = read_json(tmp_path / "results/killed/nsgan/seed0/metrics.json")
    b = read_json(tmp_path / "results/whole/nsgan/seed0/metrics.json")
    assert a["status"] == b["status"] == "finished" and a["generator_steps"] == 160
    assert a["resumed_at_steps"] and a["resumed_at_steps"][0] >= stopped_at - 1 and b["resumed_at_steps"] == []
    last = timed[0]
    assert a["earlier_wall_seconds"] == round(saved_count, 2) and a["wall_seconds"] == round(saved_count + last, 2)
    slack = 0.02  # rounding to 0.01 s; the kernel's 10 ms ticks of a start time
    assert to_checkpoint + last - slack <= a["wall_seconds"] <= child_gone - child_started + last + slack
    assert b["earlier_wall_seconds"] == 0.0 and b["wall_seconds"] == round(timed[1], 2)
    assert a["metrics"] == b["metrics"]
    # every 160 / 4 updates, and 2 tail points over the last 20 % (128..160): at 144 and 128
    assert a["curves"] == b["curves"] and [p[0] for p in a["curves"]["modes_200"]] == [40, 80, 120, 128, 144, 160]
    assert not (tmp_path / "results/killed/nsgan/seed0/in_progress").exists()
    log_a = (tmp_path / "results/killed/nsgan/seed0/train_log.csv").read_text()
    log_b = (tmp_path / "results/whole/nsgan/seed0/train_log.csv").read_text()
    # every logged step and value; not Lightning's epoch counter, which a signal landing in its own epoch-end
    # hooks leaves one ahead after resume (repro.callbacks.resumable)
    assert [r.split(",")[1:] for r in log_a.splitlines()] == [r.split(",")[1:] for r in log_b.splitlines()]


def test_column_naming_an_unregistered_metric_fails_at_load(tmp_path):
    """A column key no metric family writes (and no run-record field) is one SpecError at load, listing the
    registered families with their key forms: found before anything trains, not as an empty column after."""
    columns = [{"key": "fid_2500", "label": "FID", "protocol": "p"}]
    with pytest.raises(SpecError) as exc:
        load_spec(write_spec(tmp_path, columns=columns, claims=[]))
    message = str(exc.value)
    assert "columns[0]" in message and "'fid_2500' is no registered metric" in message
    for name in ("toy_modes (modes_N", "image (fidN_SPLIT", "stacked_modes (modesN_classifier"):
        assert name in message
    assert "seconds_per_generator_step" in message  # the record fields a column may show too
    ok = [{"key": k, "protocol": "p"} for k in ("fid5k_train10k_inception", "is50k_inception_std", "kl26k_classifier",
                                                  "reverse_kl_2500", "wall_seconds")]
    assert [c.key for c in load_spec(write_spec(tmp_path, name="ok", columns=ok, claims=[])).columns] == \
        [c["key"] for c in ok]


def test_spec_fields_come_from_the_dataclasses(tmp_path):
    """Keys are read by field name: an unknown key names the dataclass's fields; a removed key (`prepare`, now
    the variant's own hook) is unknown; a column's label defaults to its key."""
    row = {"id": "x", "config": str(REPO_ROOT / "configs/ring8/rfgan.yaml"), "prepare": ["pretrain-ae"]}
    with pytest.raises(SpecError, match="unknown key 'prepare'; valid: config, devices, ensemble, group, id, label, "
                                        "overrides, published"):
        load_spec(write_spec(tmp_path, rows=[row], matrix=[], claims=[]))
    spec = load_spec(write_spec(tmp_path, name="ok", columns=[{"key": "modes_200", "protocol": "p"}], claims=[]))
    assert spec.columns[0].label == "modes_200" and spec.columns[0].format == ".3g"
    with pytest.raises(SpecError, match=r"columns\[0\]: missing required key 'protocol'"):
        load_spec(write_spec(tmp_path, name="bad", columns=[{"key": "modes_200"}]))
    with pytest.raises(SpecError, match="unknown key 'key'; valid: column, id, label, last, rows, title, trace"):
        load_spec(write_spec(tmp_path, name="bad2", correlations=[{"id": "c", "key": "k", "rows": ["nsgan"]}]))
    with pytest.raises(SpecError, match="unknown key 'seeds'; valid: key, label, per_seed, rows, title"):
        load_spec(write_spec(tmp_path, name="bad3", traces=[{"key": "k", "rows": ["nsgan"], "seeds": [0]}]))
    claim = {"text": "t", "source": "s", "a": "lsgan:modes_200:mean", "op": "~", "b": "nsgan:modes_200:mean"}
    with pytest.raises(SpecError, match=r"claims\[0\]: any_length must be true or false, got 'false'"):
        load_spec(write_spec(tmp_path, name="bad4", claims=[{**claim, "any_length": "false"}]))
    assert load_spec(write_spec(tmp_path, name="ok2", claims=[{**claim, "any_length": True}])).claims[0].any_length


def test_matrix_inside_rows_keeps_order_and_whole_value_placeholders(tmp_path):
    """A `{matrix: ...}` entry of `rows` expands in place; a string that is exactly one placeholder of a
    mapping value becomes that mapping (a method's overrides), a scalar is formatted in as before."""
    config = str(REPO_ROOT / "configs/ring8/{m[cfg]}.yaml")
    methods = [{"id": "wc", "cfg": "wgan", "overrides": {"model.init_args.clip": 0.01, "data.batch_size": 32}},
               {"id": "sn", "cfg": "sngan", "overrides": {}}]
    rows = [{"id": "first", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml")},
            {"matrix": {"vars": {"m": methods, "s": [1, 2]}, "id": "{m[id]}-{s}", "config": config,
                        "overrides": "{m[overrides]}", "group": "{m[id]}"}},
            {"id": "last", "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml")}]
    spec = load_spec(write_spec(tmp_path, rows=rows, matrix=[], claims=[]))
    assert [r.id for r in spec.rows] == ["first", "wc-1", "wc-2", "sn-1", "sn-2", "last"]
    assert spec.row("wc-2").overrides == {"model.init_args.clip": 0.01, "data.batch_size": 32}
    assert spec.row("sn-1").overrides == {} and spec.row("sn-1").config.name == "sngan.yaml"


def test_sngan_matrix_specs_plan_the_runs_of_the_hand_written_ones():
    """`paper_tables/sngan-{cifar10,stl10}.yaml` as matrix blocks plan exactly the runs the hand-written specs
    planned: the fixture was captured from them (commit 608d10e, with main's resumable-checkpoint argument)
    with the same fields: label, group, config, overrides, devices, published numbers, seeds and the
    `repro fit` arguments of each row."""
    expected = json.loads((Path(__file__).parent / "fixtures" / "sngan_plans.json").read_text())
    for name, old in expected.items():
        spec = load_spec(REPO_ROOT / "paper_tables" / f"{name}.yaml")
        assert spec.seeds == old["seeds"] and len(plan(spec)) == old["runs"]
        rows = []
        for run in plan(spec, seeds=spec.seeds[:1]):
            r = run.row
            rows.append({"row": r.id, "label": r.label, "group": r.group, "config": str(r.config.relative_to(REPO_ROOT)),
                         "overrides": {**spec.overrides, **r.overrides}, "devices": r.devices,
                         "published": {k: [p.value, p.source] for k, p in r.published.items()},
                         "fit_args": [a.replace(str(REPO_ROOT) + "/", "") for a in run.fit_args()]})
        assert rows == old["rows"], name


def test_a_key_twice_in_a_spec_is_one_clear_error(tmp_path):
    path = write_spec(tmp_path)
    path.write_text(path.read_text() + "seeds: [3]\n")  # plain YAML would silently keep the last value
    with pytest.raises(SpecError, match="'seeds' appears twice"):
        load_spec(path)


def test_tables_lists_each_table_once_from_another_checkout(tmp_path, capsys, monkeypatch):
    """From a checkout other than the installed one, a table both hold is listed once (the local one)."""
    write_spec(tmp_path, "toy")  # a local table named like an installed one
    monkeypatch.chdir(tmp_path)
    main(["tables"])
    out = capsys.readouterr().out
    assert out.count("toy: ") == 1 and "toy: Tiny" in out  # the local spec wins
    assert "pacgan-2d: " in out  # the installed tables are still listed


def test_dry_run_plan_is_not_cut_when_piped(tmp_path):
    path = write_spec(tmp_path)
    done = subprocess.run([sys.executable, "-m", "repro", "reproduce", str(path), "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--trainer.max_steps 4 --data.num_samples 256" in done.stdout  # one line, not wrapped at 80 columns


def test_stitched_log_drops_rows_cut_by_a_kill(tmp_path):
    from repro.tables.execute import stitch_logs

    first, second, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "log.csv"
    first.write_text("epoch,step,train/d_loss\n0,10,1.0\n0,20,0.9\n0,30,0.8\n0,4")  # killed while writing step 40
    second.write_text("epoch,step,train/d_loss\n0,30,0.8\n0,40,0.7\n")  # resumed from the step-20 checkpoint
    stitch_logs([first, second], out)
    assert out.read_text().splitlines() == ["epoch,step,train/d_loss", "0,10,1.0", "0,20,0.9", "0,30,0.8", "0,40,0.7"]


def test_length_note_on_the_page_and_its_history_folded_under_it(tmp_path):
    """``steps_note`` is the page's "Training length" line; ``steps_history`` follows it in a folded block; a spec
    without a history has no block."""
    spec = load_spec(write_spec(tmp_path, steps_note="4 updates, flat.", steps_history="First 2 updates: moving."))
    text = write_report(spec).read_text()
    note, fold = text.index("**Training length:** 4 updates, flat."), text.index("<details><summary>How these lengths")
    assert note < fold < text.index("First 2 updates: moving.") < text.index("</details>") < text.index("**Runs:**")
    assert "<details>" not in write_report(load_spec(write_spec(tmp_path, name="plain", steps_note="x"))).read_text()

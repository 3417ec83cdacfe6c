"""Metric curves on a table's page: row curves over seeds, the flattening rule, the length check, "not converged"
verdicts."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from repro import REPO_ROOT
from repro.callbacks.evaluation import curve_steps
from repro.tables.curves import (RowCurve, Trend, convergence, flattened, length_check, length_curve, peak_state,
                                 peak_states, row_curves, tied_to_length, trend, trends, unconverged)
from repro.tables.extend import length_history
from repro.tables.plan import read_records
from repro.tables.report import aggregate, claim_verdict, write_report
from repro.tables.spec import SpecError, load_spec
from conftest import load_script
from test_tables import write_spec


def _record(values: list[float], steps: tuple[int, ...] = (25, 50, 80, 100)) -> dict:
    return {"status": "finished", "metrics": {"modes_200": values[-1], "high_quality_200": 0.5},
            "curves": {"modes_200": [[s, v] for s, v in zip(steps, values)],
                       "high_quality_200": [[s, 0.5] for s in steps]}}


def test_row_curve_is_the_mean_and_std_over_seeds_at_common_steps():
    curve = row_curves([_record([1, 2, 3, 4]), _record([3, 4, 5, 6])], "modes_200")
    assert curve.steps == [25, 50, 80, 100]
    assert curve.mean == [2, 3, 4, 5] and curve.finals == [4, 6]
    assert math.isclose(curve.std[0], math.sqrt(2))
    assert row_curves([_record([1, 2, 3, 4])], "missing") is None


def test_flattening_rule_by_hand():
    # last 20% of 100 steps = steps >= 80: the points at 80, 90, 100; tolerance max(5% of |final mean|, noise floor)
    steps = [20, 40, 60, 80, 90, 100]
    rising = RowCurve(steps, [1, 2, 3, 4, 4.5, 5], [0] * 6, [5.0, 5.0])  # trend +1 over 80..100 > 0.25
    still = RowCurve(steps, [1, 2, 3, 4.9, 5.1, 5], [0] * 6, [5.0, 5.0])  # trend +0.1 <= 0.25
    dip = RowCurve(steps, [1, 2, 3, 5, 4.4, 5], [0] * 6, [5.0, 5.0])  # range 0.6, trend 0: the level holds
    spread = RowCurve(steps, [1, 2, 3, 4, 4.5, 5], [0] * 6, [1.0, 9.0])  # seeds far apart: still a rising mean
    assert flattened(rising) is False and flattened(still) is True and flattened(dip) is True
    assert flattened(spread) is False
    assert flattened(rising, floor=1.01) is True and flattened(rising, floor=0.99) is False  # the column's floor
    assert trend(rising).change == pytest.approx(1.0) and trend(rising).tolerance == pytest.approx(0.25)
    assert flattened(RowCurve([50, 100], [1, 5], [0, 0], [5.0])) is None  # one point in the tail


def test_curve_steps_add_tail_points_over_the_last_fifth():
    assert curve_steps(100, 10) == set(range(10, 100, 10)) and curve_steps(100, 0) == curve_steps(100, 1) == set()
    assert curve_steps(100, 10, 4) == set(range(10, 100, 10)) | {95, 85}  # 95, 90, 85, 80: two already there
    assert curve_steps(10, 2, 3) == {5, 8, 9}  # 10 x (1 - 0.2 j / 3) = 9.33, 8.67, 8: rounded, 9 once
    assert curve_steps(100, 0, 2) == {90, 80}
    steps = sorted(curve_steps(100, 10, 4) | {100})
    curve = RowCurve(steps, [float(s) for s in steps], [0.0] * len(steps), [100.0])
    assert trend(curve).change == pytest.approx(20.0)  # the rule's tail is the same 20 %: 80, 85, 90, 95, 100


def test_trend_is_the_least_squares_line_over_the_tail():
    rng = np.random.default_rng(0)
    steps = list(range(100, 2001, 100))
    mean = list(np.cumsum(rng.normal(0.3, 1.0, len(steps))))
    curve = RowCurve(steps, mean, [0.0] * len(steps), [mean[-1]])
    tail = [(s, m) for s, m in zip(steps, mean) if s >= 1600]
    slope = np.polyfit([s for s, _ in tail], [m for _, m in tail], 1)[0]
    assert trend(curve).change == pytest.approx(slope * (2000 - 1600), rel=1e-9)


def test_claim_on_a_row_that_did_not_flatten_says_not_converged(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    for row, values in (("nsgan", [1, 2, 3, 4]), ("lsgan", [5, 6, 7, 7.1])):
        for seed in spec.seeds:
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(_record(values)))
    flat = convergence(spec, read_records(spec))
    assert flat["nsgan"]["modes_200"] == "moving" and flat["lsgan"]["modes_200"] == "flat"
    claim = spec.claims[0]  # lsgan:modes_200:mean > nsgan:modes_200:mean
    assert claim_verdict(claim, aggregate(spec), spec)[1] == "holds"
    assert claim_verdict(claim, aggregate(spec), spec, flat)[1] == "not converged"
    same_runs = dataclasses.replace(claim, any_length=True)  # e.g. two implementations of one training
    assert claim_verdict(same_runs, aggregate(spec), spec, flat)[1] == "holds"
    page = write_report(spec).read_text()
    assert "**not converged**" in page and "## Convergence" in page and "**not flattened** (Δ +" in page
    assert "Rows per column: modes: 1 converged or flattened, 1 still moving" in page
    assert "seeds would decide" not in page and "length_curves" not in page  # tail trends only
    assert (tmp_path / "paper_tables/figures/tiny/curves.png").stat().st_size > 1000


def test_a_tail_floor_replaces_the_noise_floor_in_the_flattening_tolerance(tmp_path):
    """A claims' noise floor that is a seed spread (here 3 modes) would call a curve falling 1 per point flat; the
    column's ``tail_floor`` (its evaluation noise) judges the curve instead; a bad one is refused on load."""
    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "noise_floor": 3, **extra}
               for extra in ({}, {"tail_floor": 0.5})]
    states = []
    for i, column in enumerate(columns):
        spec = load_spec(write_spec(tmp_path / str(i), columns=[column], claims=[]))
        for row in ("nsgan", "lsgan"):
            for seed in spec.seeds:
                folder = spec.results_dir / row / f"seed{seed}"
                folder.mkdir(parents=True)
                (folder / "metrics.json").write_text(json.dumps(_record([9, 7, 4, 2 + seed / 10])))
        assert spec.columns[0].flat_floor == [3, 0.5][i]
        states.append(convergence(spec, read_records(spec))["nsgan"]["modes_200"])
    assert states == ["flat", "moving"]
    with pytest.raises(SpecError, match="tail_floor must be a number >= 0"):
        load_spec(write_spec(tmp_path / "bad", columns=[{**columns[0], "tail_floor": -1}], claims=[]))


def test_a_peak_claim_compares_each_seeds_best_curve_point_once_the_peak_is_past(tmp_path):
    """Statistic ``peak``: each seed's best curve point, averaged; settled unless the tail still improves."""
    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "better": "higher"},
               {"key": "high_quality_200", "label": "HQ", "protocol": "200 samples"}]
    claims = [{"text": "peaks", "source": "none", "a": "lsgan:modes_200:peak", "op": ">", "b": "nsgan:modes_200:peak"},
              {"text": "finals", "source": "none", "a": "lsgan:modes_200:mean", "op": ">", "b": "nsgan:modes_200:mean"}]
    spec = load_spec(write_spec(tmp_path, columns=columns, claims=claims))

    def write(row: str, per_seed: list[list[float]]) -> None:
        for seed, values in zip(spec.seeds, per_seed):
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(_record(values)))

    write("lsgan", [[1, 6, 3, 2], [2, 7, 2, 1]])  # peaks 6 and 7 at step 50, then a breakdown
    write("nsgan", [[3, 4, 4, 4], [3, 5, 5, 5]])  # flat from step 50: peaks 4 and 5 (the first best point)
    cells, table = aggregate(spec), trends(spec, read_records(spec))
    assert cells["lsgan"]["modes_200"].peaks == [6, 7] and cells["lsgan"]["modes_200"].peak_steps == [50, 50]
    assert cells["nsgan"]["modes_200"].stat("peak") == 4.5 and cells["nsgan"]["high_quality_200"].peaks == []
    flat, peaked = convergence(spec, read_records(spec)), peak_states(spec, table)
    assert flat["lsgan"]["modes_200"] == "moving" and peaked["lsgan"]["modes_200"] == "flat"  # falling back
    assert "high_quality_200" not in peaked["lsgan"]  # no direction, no peak
    shown, verdict = claim_verdict(spec.claims[0], cells, spec, flat, peaked=peaked)
    bound = 2 * math.hypot(0.5, 0.5)  # s.e. of the peaks (6, 7) and (4, 5): std sqrt(0.5) / sqrt(2) = 0.5 each
    assert verdict == "holds" and "peak(lsgan, modes_200) = 6.5 (seeds' best at step 50/50)" in shown
    assert 6.5 - 4.5 > bound
    assert claim_verdict(spec.claims[1], cells, spec, flat, peaked=peaked)[1] == "not converged"  # finals: moving
    assert claim_verdict(spec.claims[0], cells, spec, flat)[1] == "convergence not measured"  # no peak states given
    page = write_report(spec).read_text()
    assert "each seed's best point on its curve" in page and "seeds' best at step 50/50" in page

    write("lsgan", [[1, 2, 3, 4], [2, 3, 4, 5]])  # still rising: its peak is not settled
    table = trends(spec, read_records(spec))
    assert claim_verdict(spec.claims[0], aggregate(spec), spec, convergence(spec, read_records(spec)),
                         peaked=peak_states(spec, table))[1] == "not converged"
    with pytest.raises(SpecError, match="needs column 'high_quality_200' to say which way is better"):
        load_spec(write_spec(tmp_path, columns=columns, claims=[claims[0] | {"a": "lsgan:high_quality_200:peak"}]))


def test_a_peak_is_settled_unless_the_tail_improves_in_the_better_direction():
    falling, rising = Trend(-1.0, 0.1), Trend(1.0, 0.1)
    assert peak_state(falling, "higher") == "flat" and peak_state(rising, "higher") == "moving"
    assert peak_state(falling, "lower") == "moving" and peak_state(rising, "lower") == "flat"  # e.g. FID
    assert peak_state(Trend(0.05, 0.1), "higher") == "flat" and peak_state(None, "higher") is None
    check = Trend(0.0, 0.1, from_steps=50, to_steps=100, beside=rising)  # a length check: its tail is beside it
    assert peak_state(check, "higher") == "moving"
    # with a standard error: +1.0 ± 0.5 improves beyond 0.1 by less than two (undecided); -0.2 ± 0.1 does not
    # improve by two (flat); +1.0 ± 0.3 improves by more than two (moving)
    assert peak_state(Trend(1.0, 0.1, se=0.5, n=3), "higher") == "undecided"
    assert peak_state(Trend(-0.2, 0.1, se=0.1, n=3), "higher") == "flat"
    assert peak_state(Trend(1.0, 0.1, se=0.3, n=3), "higher") == "moving"


def test_the_tail_trend_carries_the_standard_error_of_the_seeds_own_tail_changes():
    """Three seeds with their own tails: Δ is the mean's least-squares change (equal to the mean of the seeds'),
    its s.e. the sample std of the seeds' changes over √3 (both by numpy.polyfit here); the three states."""
    steps = [20, 40, 60, 80, 90, 100]
    rng = np.random.default_rng(1)
    seeds = [list(rng.normal(5.0, 1.0, len(steps))) for _ in range(3)]
    curve = row_curves([{"curves": {"m": [[s, v] for s, v in zip(steps, values)]}} for values in seeds], "m")
    own = [np.polyfit(steps[3:], values[3:], 1)[0] * 20 for values in seeds]
    got = trend(curve)
    assert got.change == pytest.approx(np.mean(own), rel=1e-9) and got.n == 3
    assert got.se == pytest.approx(np.std(own, ddof=1) / math.sqrt(3), rel=1e-9)

    def tail(changes: list[float]) -> Trend:  # seeds rising by these amounts over the tail (80..100), level 10
        per_seed = [[10.0, 10.0, 10.0, 10.0, 10.0 + c / 2, 10.0 + c] for c in changes]
        return trend(RowCurve(steps, list(np.mean(per_seed, axis=0)), [0.0] * 6, [p[-1] for p in per_seed],
                              seeds=per_seed))

    # tolerance: 5 % of the final mean, ~0.5
    assert tail([0.1, 0.2, 0.0]).state == "flat"  # +0.1 ± 0.06 within the tolerance by two s.e.
    assert tail([2.0, 2.2, 1.8]).state == "moving"  # +2.0 ± 0.1 beyond it by two
    noisy = tail([3.0, -1.0, 0.5])
    assert noisy.state == "undecided"  # +0.83 ± 1.17: the seeds cannot place it
    assert tail([-2.0, 2.0, 0.0]).state == "undecided"  # a flat mean through seeds that disagree is not shown flat
    assert noisy.change == pytest.approx(2.5 / 3) and noisy.tolerance == pytest.approx(0.05 * (10 + 2.5 / 3))
    assert noisy.seeds_to_decide == math.ceil(3 * (2 * noisy.se / (noisy.change - noisy.tolerance)) ** 2)


def test_a_wall_time_column_draws_each_row_against_its_mean_training_seconds(tmp_path, monkeypatch):
    from repro.tables import curves

    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "curve_x": "train_seconds"},
               {"key": "high_quality_200", "label": "HQ", "protocol": "200 samples"},
               {"key": "train_seconds", "label": "training s", "protocol": "run record"}]  # no curve: no panel
    spec = load_spec(write_spec(tmp_path, columns=columns, claims=[]))
    for seed, seconds in zip(spec.seeds, ((10, 20, 32, 40), (14, 24, 36, 48))):
        folder = spec.results_dir / "nsgan" / f"seed{seed}"
        folder.mkdir(parents=True)
        record = _record([1, 2, 3, 4]) | {"curve_seconds": [[s, t] for s, t in zip((25, 50, 80, 100), seconds)]}
        (folder / "metrics.json").write_text(json.dumps(record))
    assert row_curves([_record([1, 2, 3, 4])], "modes_200").seconds is None  # no curve_seconds: no time axis
    drawn = []
    monkeypatch.setattr(curves, "save_figure", lambda fig, out: drawn.append(fig) or out)
    write_report(spec)
    time_ax, step_ax = drawn[0].axes
    assert time_ax.get_xlabel().startswith("training wall time") and step_ax.get_xlabel() == "generator updates"
    assert list(time_ax.lines[0].get_xdata()) == [12, 22, 34, 44]  # mean over the two seeds at each point
    assert list(step_ax.lines[0].get_xdata()) == [25, 50, 80, 100]


def test_curve_x_is_checked_when_the_spec_loads(tmp_path):
    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "curve_x": "seconds"}]
    with pytest.raises(SpecError, match="curve_x 'seconds' is not valid; valid: step, train_seconds"):
        load_spec(write_spec(tmp_path, columns=columns, claims=[]))


def test_agreement_claim_compares_two_means_within_two_combined_standard_errors(tmp_path):
    """op '~': |mean_a - mean_b| <= 2 sqrt(se_a^2 + se_b^2), se = std / sqrt(n) over seeds (by hand below)."""
    claims = [{"text": "same", "source": "none", "a": "lsgan:modes_200:mean", "op": "~", "b": "nsgan:modes_200:mean"}]
    spec = load_spec(write_spec(tmp_path, claims=claims))
    for row, finals in (("nsgan", (4.0, 6.0)), ("lsgan", (6.0, 8.0))):
        for seed, final in zip(spec.seeds, finals):
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(_record([final])))
    shown, verdict = claim_verdict(spec.claims[0], aggregate(spec), spec)
    se = math.sqrt(2) / math.sqrt(2)  # std of (4, 6) and of (6, 8) is sqrt(2); n = 2
    bound = 2 * math.hypot(se, se)  # 2.83 >= |7 - 5| = 2
    assert verdict == "holds" and f"{bound:.3g}" in shown
    for seed in spec.seeds:
        (spec.results_dir / "lsgan" / f"seed{seed}" / "metrics.json").write_text(json.dumps(_record([10.0])))
    assert claim_verdict(spec.claims[0], aggregate(spec), spec)[1] == "does not hold"  # |10 - 5| > 2 hypot(1, 0)
    with pytest.raises(SpecError, match="op '~' compares two rows' means"):
        load_spec(write_spec(tmp_path, claims=[claims[0] | {"b": 3}]))


def test_rows_on_several_data_sets_get_one_line_of_panels_each(tmp_path, monkeypatch):
    from repro.tables import curves

    matrix = [{"vars": {"set": ["ring8", "grid25"]}, "id": "nsgan-{set}", "group": "nsgan",
               "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "overrides": {"data.dataset": "{set}"}}]
    spec = load_spec(write_spec(tmp_path, matrix=matrix, claims=[]))
    for row in spec.rows:
        for seed in spec.seeds:
            folder = spec.results_dir / row.id / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(_record([1, 2, 3, 4])))
    drawn = []
    monkeypatch.setattr(curves, "save_figure", lambda fig, out: drawn.append(fig) or out)
    write_report(spec)
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes] == ["modes · ring8", "HQ % · ring8", "modes · grid25", "HQ % · grid25"]
    assert all(len(ax.lines) == 1 for ax in axes)  # each panel holds only its own data set's row
    assert axes[0].lines[0].get_label().startswith("nsgan-ring8") and axes[2].lines[0].get_label().startswith("nsgan-grid25")


def _config(steps: int, lr: float = 1e-3) -> dict:
    return {"model": {"init_args": {"lr_g": lr}}, "trainer": {"max_steps": steps}, "evaluation": {"curve_points": 4}}


def test_length_history_keeps_the_finished_shorter_runs_of_the_same_settings():
    early = {"generator_steps": 25, "git_commit": "0ld", "metrics": {}, "config": _config(25)}
    old = {"status": "finished", "generator_steps": 50, "git_commit": "abc", "metrics": {"modes_200": 3},
           "config": _config(50), "shorter_runs": [early, {**early, "generator_steps": 20, "config": None}]}
    entry = {"generator_steps": 50, "git_commit": "abc", "metrics": {"modes_200": 3}, "config": _config(50)}
    assert length_history(old, _config(100)) == [early, entry]  # an entry without its config cannot be judged
    assert length_history(old, _config(100, lr=2e-3)) == []  # another setting changed: another experiment
    assert length_history(old, _config(50)) == [early]  # only entries shorter than the new run
    assert length_history(old, _config(40)) == [early]  # a shorter spec drops the longer entries
    stopped = {**old, "status": "stopped", "config": _config(100)}  # a retraining stopped mid-way keeps the history
    assert length_history(stopped, _config(100)) == [early]
    failed = {"status": "failed", "config": None, "shorter_runs": [early, entry]}  # died before writing its config
    assert length_history(old, None) == [old["shorter_runs"][1], early, entry]  # carried unjudged, by length
    assert length_history(failed, _config(100)) == [early, entry]  # judged by the next record
    assert length_history(None, _config(100)) == []


def _lengthened(now: float, shorter: dict[int, float]) -> dict:
    record = _record([now - 1, now - 0.5, now, now])
    record["generator_steps"] = 100
    record["shorter_runs"] = [{"generator_steps": s, "metrics": {"modes_200": v}} for s, v in shorter.items()]
    return record


def test_length_check_compares_mean_finals_at_the_longest_common_shorter_length():
    runs = [_lengthened(4.0, {25: 1.0, 50: 3.0}), _lengthened(6.0, {50: 5.5})]
    check = length_check(runs, "modes_200")  # 50 is the longest length both hold: means 5.0 vs 4.25
    assert (check.from_steps, check.to_steps) == (50, 100)
    assert check.change == pytest.approx(5.0 - 4.25) and check.tolerance == pytest.approx(0.05 * 5.0)
    assert check.se == pytest.approx(np.std([4.0 - 3.0, 6.0 - 5.5], ddof=1) / np.sqrt(2))  # paired by run
    assert check.flat is False and length_check(runs, "modes_200", floor=0.8).flat is False  # 0.75 + 2 x 0.25 > 0.8
    assert length_check(runs, "modes_200", floor=1.3).flat is True
    assert length_check([runs[0], _lengthened(6.0, {})], "modes_200") is None  # a run without a shorter one
    assert length_check(runs, "high_quality_200") is None  # no final for it at the shorter length
    assert length_check([runs[0], {**runs[1], "generator_steps": 80}], "modes_200") is None  # two lengths
    assert length_check([{**runs[0], "generator_steps": 50}] * 2, "modes_200").from_steps == 25  # shorter than 50
    assert length_check([{**r, "generator_steps": 25} for r in runs], "modes_200") is None  # nothing shorter


def test_a_length_check_decides_convergence_over_the_tail_trend(tmp_path):
    """A row whose tail still rises (an annealing schedule) but whose final did not move from the shorter runs' is
    converged; the page shows both, and the claim gets its verdict."""
    spec = load_spec(write_spec(tmp_path))
    for row, values, shorter in (("nsgan", [1, 2, 3, 4], 4.1), ("lsgan", [5, 6, 7, 7.1], 5.0)):
        for seed in spec.seeds:
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True)
            record = {**_record(values), "generator_steps": 100,
                      "shorter_runs": [{"generator_steps": 50, "metrics": {"modes_200": shorter}}]}
            (folder / "metrics.json").write_text(json.dumps(record))
    flat = convergence(spec, read_records(spec))
    assert flat["nsgan"]["modes_200"] == "flat" and flat["lsgan"]["modes_200"] == "moving"  # the tails: the opposite
    assert claim_verdict(spec.claims[0], aggregate(spec), spec, flat)[1] == "not converged"
    page = write_report(spec).read_text()
    assert "length-converged (final 50 → 100 updates Δ -0.1 ± 0.0 s.e.; tolerance 0.2; tail: **not flattened** (Δ +" in page
    assert "**not length-converged** (final 50 → 100 updates Δ +2.1 ± 0.0 s.e.; tolerance 0.4; tail: flattened" in page
    assert "repro reproduce tiny --length-scale 0.5    # the shorter runs of the length check" in page


def _schedule(lr_decay: str) -> dict:
    return {"model": {"class_path": "repro.variants.NSGAN", "init_args": {"lr_decay": lr_decay}}}


def test_tied_to_length_reads_the_records_configs():
    assert tied_to_length([{"config": _schedule("linear")}]) and not tied_to_length([{"config": _schedule("none")}])
    assert tied_to_length([{"config": _schedule("none")}, {"config": _schedule("linear")}])  # any run's schedule
    assert tied_to_length([{"config": _schedule("none")}, {}])  # no config: nothing says it is not tied


@pytest.mark.parametrize("lr_decay", ["linear", "none"])
def test_only_a_schedule_tied_to_the_length_lets_the_length_check_decide(tmp_path, lr_decay):
    """Shorter runs at a tenth of the length, the finals far below: under a decaying learning rate the length check
    decides ("not length-converged"); under a constant one the flat tail decides and the check is shown beside it."""
    spec = load_spec(write_spec(tmp_path))
    for row in ("nsgan", "lsgan"):
        for seed in spec.seeds:
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True)
            record = {**_record([5, 6, 7, 7.05]), "generator_steps": 100, "config": _schedule(lr_decay),
                      "shorter_runs": [{"generator_steps": 10, "metrics": {"modes_200": 2.0 + seed}}]}
            (folder / "metrics.json").write_text(json.dumps(record))
    flat = convergence(spec, read_records(spec))
    tied = lr_decay == "linear"
    assert flat["nsgan"]["modes_200"] == ("moving" if tied else "flat")
    assert claim_verdict(spec.claims[0], aggregate(spec), spec, flat)[1] == ("not converged" if tied else "within noise")
    page = write_report(spec).read_text()
    check = "**not length-converged** (final 10 → 100 updates Δ +4.5 ± 0.5 s.e.; tolerance 0.4"
    tail = "flattened (Δ +0.05 ± 0.0 s.e.; tolerance 0.4"  # identical seeds: a standard error of 0
    assert (f"{check}; tail: {tail}))" if tied else f"{tail}; beside it, {check}))") in page
    assert ("--length-scale 0.1" in page) == tied  # the regenerate command names the deciding check's runs only


def test_length_history_tool_reads_shorter_runs_from_git_history(tmp_path):
    """`tools/length_history.py`: the committed versions of a record that finished shorter with the same settings,
    trained at ``since`` or later from a clean tree, become its shorter runs; older or dirty ones do not."""
    import subprocess

    tool = load_script("tools/length_history.py")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    record = tmp_path / "results/t/row/seed0/metrics.json"
    record.parent.mkdir(parents=True)
    commits: list[str] = []
    for steps, dirty in ((10, False), (20, False), (30, True), (40, False)):
        trained_at = commits[-1] if commits else None  # the code commit that trained it: the previous one
        record.write_text(json.dumps({"status": "finished", "generator_steps": steps, "git_commit": trained_at,
                                      "git_dirty": dirty, "metrics": {"modes_200": steps / 10},
                                      "config": _config(steps)}))
        git("add", "-A")
        git("commit", "-q", "-m", f"{steps}")
        commits.append(git("rev-parse", "HEAD"))
    now = json.loads(record.read_text())
    history = tool.history_from_git(tmp_path, now, record, commits[0])
    assert [(h["generator_steps"], h["git_commit"]) for h in history] == [(20, commits[0])]  # 10: no commit; 30: dirty
    assert [h["generator_steps"] for h in tool.history_from_git(tmp_path, now, record, commits[1])] == []


@pytest.mark.parametrize(("change", "se", "tolerance", "state", "verdict"), [
    (0.5, 0.2, 1.0, "flat", None),                        # 0.5 + 0.4 <= 1: within the tolerance by 2 s.e.
    (0.5, 0.3, 1.0, "undecided", "convergence undecided"),  # 0.5 + 0.6 > 1 >= 0.5 - 0.6
    (-1.8, 7.4, 1.3, "undecided", "convergence undecided"),  # beyond the tolerance, but not by 2 s.e. (WGAN-TS-like)
    (-2.0, 0.4, 1.0, "moving", "not converged"),          # |-2| - 0.8 > 1
    (0.9, None, 1.0, "flat", None),                       # a tail trend has no s.e.: the tolerance alone
    (1.1, None, 1.0, "moving", "not converged"),
])
def test_length_check_states_read_the_change_with_two_standard_errors(change, se, tolerance, state, verdict):
    t = Trend(change, tolerance, from_steps=50 if se is not None else None, to_steps=100 if se is not None else None,
              se=se)
    assert t.state == state and t.flat is (state == "flat")
    assert unconverged([t.state, "flat"]) == verdict
    assert unconverged(["flat", None]) == "convergence not measured"
    assert unconverged(["undecided", "moving"]) == "not converged"  # a moving side decides


@pytest.mark.parametrize(("change", "se", "n", "tolerance"), [
    (2.0, 1.5, 3, 4.2),    # |change| under the tolerance: more seeds would show it converged
    (-6.0, 4.9, 3, 3.7),   # beyond it: more seeds would show it moving
    (1.1, 3.0, 2, 0.355),
])
def test_seeds_to_decide_is_the_fewest_seeds_whose_standard_error_decides(change, se, n, tolerance):
    """The estimate, checked by shrinking the measured spread (sd = s.e. x sqrt(n)) to m seeds: the state at the
    estimate is decided, one seed fewer is still undecided."""
    t = Trend(change, tolerance, from_steps=50, to_steps=100, se=se, n=n)
    assert t.state == "undecided"
    m = t.seeds_to_decide
    assert m is not None and m > n
    with_seeds = lambda k: Trend(change, tolerance, from_steps=50, to_steps=100, se=se * math.sqrt(n / k), n=k)
    assert with_seeds(m).state == ("flat" if abs(change) < tolerance else "moving")
    assert with_seeds(m - 1).state == "undecided"
    assert Trend(0.5, 1.0, se=0.1, n=3).seeds_to_decide is None  # decided already
    assert Trend(1.0, 1.0, se=0.1, n=3).seeds_to_decide is None  # on the tolerance: no number of seeds decides


def test_length_curve_is_the_mean_and_standard_error_of_the_finals_at_each_length():
    records = [{"generator_steps": 100, "metrics": {"m": 7.0},
                "shorter_runs": [{"generator_steps": 25, "metrics": {"m": 1.0}}, {"generator_steps": 50, "metrics": {"m": 3.0}}]},
               {"generator_steps": 100, "metrics": {"m": 5.0}, "shorter_runs": [{"generator_steps": 50, "metrics": {"m": 9.0}}]}]
    curve = length_curve(records, "m")
    assert curve is not None and curve.steps == [25, 50, 100] and curve.n == [1, 2, 2]
    assert curve.mean == pytest.approx([1.0, 6.0, 6.0])
    assert curve.se == pytest.approx([0.0, np.std([3.0, 9.0], ddof=1) / np.sqrt(2), np.std([7.0, 5.0], ddof=1) / np.sqrt(2)])
    assert length_curve([{"generator_steps": 100, "metrics": {"m": 1.0}}], "m") is None  # one length: nothing to draw


def test_undecided_length_check_on_the_page_and_in_claims(tmp_path):
    """Seeds whose changes scatter widely around a mean change beyond the tolerance: undecided, not "not converged"."""
    spec = load_spec(write_spec(tmp_path))
    for row, values, shorter in (("nsgan", [1, 2, 3, 4], [4.0, 4.0]), ("lsgan", [5, 6, 7, 7.1], [3.0, 9.0])):
        for seed in spec.seeds:
            folder = spec.results_dir / row / f"seed{seed}"
            folder.mkdir(parents=True)
            record = {**_record(values), "generator_steps": 100,
                      "shorter_runs": [{"generator_steps": 50, "metrics": {"modes_200": shorter[seed]}}]}
            (folder / "metrics.json").write_text(json.dumps(record))
    flat = convergence(spec, read_records(spec))
    # lsgan: final 7.1 at 100 against 3 and 9 at 50: changes +4.1 and -1.9, mean +1.1 (tolerance 0.355), s.e. 3.0
    assert flat["nsgan"]["modes_200"] == "flat" and flat["lsgan"]["modes_200"] == "undecided"
    assert claim_verdict(spec.claims[0], aggregate(spec), spec, flat)[1] == "convergence undecided"
    page_path = write_report(spec)
    page = page_path.read_text()
    assert "**length undecided** (final 50 → 100 updates Δ +1.1 ± 3.0 s.e.; tolerance 0.4; ~130 seeds would decide;" in page
    assert "the `length_curves` figure" in page and f"figures/{spec.name}/length_curves.png" in page
    assert (page_path.parent / "figures" / spec.name / "length_curves.png").stat().st_size > 0
    assert "Rows per column: modes: 1 converged or flattened, 1 undecided" in page and '"seeds would decide": the' in page
    assert "**convergence undecided**" in page


def test_a_change_on_the_tolerance_is_shown_as_more_than_a_thousand_seeds(tmp_path):
    """~163,458 seeds is not a plan: beyond SEEDS_SHOWN the page says "more than" and what decides instead."""
    from repro.tables.report import SEEDS_SHOWN, _convergence_lines
    spec = load_spec(write_spec(tmp_path))
    near = Trend(11.5, 11.7, se=21.4, n=3)  # stacked-mnist's D = 1/2 G modes on 3 Dec
    far = Trend(1.1, 0.355, se=3.0, n=2)
    assert near.seeds_to_decide > SEEDS_SHOWN >= far.seeds_to_decide
    table = {row.id: {col.key: None for col in spec.columns} for row in spec.rows}
    first, second = (row.id for row in spec.rows[:2])
    table[first]["modes_200"], table[second]["modes_200"] = near, far
    page = "\n".join(_convergence_lines(spec, table))
    assert f"more than {SEEDS_SHOWN:,} seeds would decide" in page and f"{near.seeds_to_decide:,}" not in page
    assert f"~{far.seeds_to_decide:,} seeds would decide" in page and "a longer run" in page

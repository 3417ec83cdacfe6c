"""Published numbers judged reproduced or not (``repro.tables.reproduction``): each rule by hand, the cases that
give no verdict, the spec's check of the rule, and the page section."""
from __future__ import annotations

import math

import pytest

from repro import REPO_ROOT
from repro.tables.plan import plan
from repro.tables.cell import Cell
from repro.tables.report import write_report
from repro.tables.reproduction import reproduction_verdict
from repro.tables.spec import Column, Published, SpecError, load_spec
from test_tables import _fake_record, write_spec

PAPER = Published("6.3 ± 0.5", "PacGAN Table 1")


def _col(rule: str, stat: str = "se", n: int = 10) -> Column:
    return Column("modes_200", "modes", "200 samples", format=".2f", paper_stat=stat, paper_n=n, reproduction=rule)


def test_published_number_reads_the_mean_and_its_spread():
    assert Published("6.3 ± 0.5", "s").number() == (6.3, 0.5)
    assert Published("21.7±.21", "s").number() == (21.7, 0.21)
    assert Published("29.0", "s").number() == (29.0, 0.0)
    assert Published("8.12 (best-FID checkpoint; 9.82 at the best-IS one)", "s").number() == (8.12, 0.0)
    assert Published("not printed", "s").number() is None


def test_two_combined_standard_errors_by_hand():
    near, far = Cell(values=[6.0, 7.0, 8.0]), Cell(values=[8.0, 8.5, 9.0])
    se_near = 1.0 / math.sqrt(3)  # std 1 over 3 seeds
    bound = 2 * math.sqrt(se_near ** 2 + 0.5 ** 2)  # the paper's printed ± is its s.e.
    shown, verdict = reproduction_verdict(_col("two_se"), near, PAPER, "flat")
    assert verdict == "reproduced" and f"2 combined s.e. {bound:.3g}" in shown and "difference 0.7" in shown
    assert abs(7.0 - 6.3) <= bound < abs(8.5 - 6.3)
    assert reproduction_verdict(_col("two_se"), far, PAPER, "flat")[1] == "not reproduced"
    # a printed std over n runs: the paper's s.e. is std / sqrt(n)
    std_bound = 2 * math.sqrt((0.5 / math.sqrt(3)) ** 2 + (5.0 / math.sqrt(4)) ** 2)
    shown, verdict = reproduction_verdict(_col("two_se", "std", 4), far, Published("6.3 ± 5.0", "s"), "flat")
    assert f"2 combined s.e. {std_bound:.3g}" in shown and verdict == "reproduced"


def test_within_the_published_spread_by_hand():
    paper = Published("628.0 ± 140.9", "PacGAN Table 3")
    inside, outside = Cell(values=[480.0, 842.0, 819.0]), Cell(values=[200.0, 190.0, 180.0])
    assert reproduction_verdict(_col("spread", "std", 0), inside, paper, "flat")[1] == "reproduced"  # mean 713.7
    shown, verdict = reproduction_verdict(_col("spread", "std", 0), outside, paper, "flat")
    assert verdict == "not reproduced" and "band 487.10 to 768.90" in shown


def test_no_verdict_without_runs_two_seeds_the_spec_settings_and_a_flat_curve():
    two = Cell(values=[6.0, 7.0])
    assert reproduction_verdict(_col("two_se"), Cell(), PAPER, None)[1] == "not run"
    assert reproduction_verdict(_col("two_se"), two, PAPER, "flat", stale=True)[1] == "stale runs"
    assert reproduction_verdict(_col("two_se"), two, PAPER, "moving")[1] == "not converged"
    assert reproduction_verdict(_col("two_se"), two, PAPER, "undecided")[1] == "convergence undecided"
    assert reproduction_verdict(_col("two_se"), two, PAPER, None)[1] == "convergence not measured"
    assert reproduction_verdict(_col("two_se"), Cell(values=[6.3]), PAPER, "flat")[1] == "one seed"


def test_spec_refuses_a_two_se_rule_without_the_papers_standard_error(tmp_path):
    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "reproduction": "two_se"}]
    with pytest.raises(SpecError, match="needs the paper's standard error"):
        load_spec(write_spec(tmp_path, columns=columns))
    with pytest.raises(SpecError, match="reproduction 'exact' is not valid"):
        load_spec(write_spec(tmp_path, columns=[{**columns[0], "reproduction": "exact"}]))


def test_page_marks_each_published_number(tmp_path):
    columns = [{"key": "modes_200", "label": "modes", "protocol": "200 samples", "format": ".1f",
                "paper_stat": "se", "paper_n": 10, "reproduction": "two_se"},
               {"key": "high_quality_200", "label": "HQ %", "protocol": "200 samples", "scale": 100}]
    published = {"modes_200": {"value": "6.3 ± 0.5", "source": "PacGAN Table 1"},
                 "high_quality_200": {"value": "98.2 ± 0.2", "source": "PacGAN Table 1"}}
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1], columns=columns, claims=[], matrix=[], rows=[
        {"id": "nsgan", "config": str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "published": published},
        {"id": "lsgan", "config": str(REPO_ROOT / "configs/ring8/lsgan.yaml"),
         "published": {"modes_200": published["modes_200"]}}]))
    for run in plan(spec, only=["nsgan"]):
        _fake_record(run, "finished", 6.0 + run.seed)
    page = write_report(spec).read_text()
    section = page.split("## Published numbers reproduced?")[1].split("##")[0]
    assert "| nsgan | modes | ours 6.5 ± 0.5 s.e. (n=2) vs paper 6.3 ± 0.5" in section and "**reproduced**" in section
    assert "| lsgan | modes | paper 6.3 ± 0.5 | **not run** |" in section
    assert "HQ %" not in section.split("|---|")[1]  # no rule for that column: no verdict

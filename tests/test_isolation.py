"""Tests leave no process-wide state behind (conftest.scoped_process_state, run around every test)."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import default_dtype, scoped_process_state


def test_default_dtype_is_scoped_also_on_errors():
    with pytest.raises(RuntimeError), default_dtype(torch.float64):
        assert torch.ones(1).dtype == torch.float64
        raise RuntimeError("a failing test body")
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("leak, what", [
    (lambda: torch.set_default_dtype(torch.float64), "torch default dtype: torch.float32 -> torch.float64"),
    (lambda: torch.set_num_threads(torch.get_num_threads() + 1), "torch intra-op threads"),
    (lambda: torch.use_deterministic_algorithms(True), "torch deterministic algorithms"),
    (lambda: os.chdir(os.path.dirname(os.getcwd())), "working directory"),
])
def test_a_leak_fails_the_test_and_is_undone(leak, what):
    before = (torch.get_default_dtype(), torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              os.getcwd())
    with pytest.raises(pytest.fail.Exception, match=what):
        with scoped_process_state():
            leak()
    assert (torch.get_default_dtype(), torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            os.getcwd()) == before


def test_what_the_code_sets_for_its_process_is_put_back(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with scoped_process_state():
        import lightning as L
        L.seed_everything(3, verbose=False)  # as `repro fit --seed_everything 3` does in-process
        assert os.environ["PL_GLOBAL_SEED"] == "3"
    assert "PL_GLOBAL_SEED" not in os.environ

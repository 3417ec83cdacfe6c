"""glibc malloc tuning at the CLI's start (repro.allocator)."""
from __future__ import annotations

import ctypes.util
import platform

import pytest

from repro.allocator import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tune_malloc_sets_both_thresholds_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPRO_MALLOC", raising=False)
    assert tune_malloc() is True  # mallopt returned 1 for both: the values are within glibc's limits


def test_repro_malloc_default_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_MALLOC", "default")
    assert tune_malloc() is False

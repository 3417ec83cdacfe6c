"""Shared fixtures: the MNIST folder (from REPRO_DATA_DIR) and an in-process CLI runner."""
from __future__ import annotations

import builtins
import contextlib
import importlib.util
import logging
import os
import types
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch  # noqa: F401  (its loggers bind sys.stderr at import: here, not inside a capsys test)
import pytest
import torch

from repro import REPO_ROOT

# The README's test command passes a relative REPRO_DATA_DIR (../shared/data); tests chdir into
# temporary folders, so resolve it once, against the directory pytest was started from.
if os.environ.get("REPRO_DATA_DIR"):
    os.environ["REPRO_DATA_DIR"] = str(Path(os.environ["REPRO_DATA_DIR"]).resolve())

# The test models are tiny: one intra-op thread avoids OpenMP oversubscription (10x faster on 2 shared cores).
torch.set_num_threads(1)


# Lightning's seed_everything, run by the code under test; repro.fit.probe_cuda_once
_CODE_SET_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "PYTORCH_NVML_BASED_CUDA_CHECK")
_CODE_SET_LOGGERS = ("lightning.pytorch", "lightning.fabric")  # `repro bench` quiets them


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype is ``dtype`` inside the block; the previous one is restored after it, also on errors."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _process_state() -> dict[str, object]:
    """The process-wide settings a test may change (each must be restored by the test that changes it)."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        cwd = None
    return {"torch default dtype": torch.get_default_dtype(), "torch intra-op threads": torch.get_num_threads(),
            "torch deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                               torch.is_deterministic_algorithms_warn_only_enabled()),
            "torch grad mode": torch.is_grad_enabled(), "working directory": cwd}


@contextlib.contextmanager
def scoped_process_state() -> Iterator[None]:
    """Fails (``pytest.fail``) if the block leaves torch's process-wide settings or the working directory changed,
    restoring them first so later tests are unaffected; puts back what the code under test sets for its process
    (Lightning's seed variables, `repro bench`'s logger levels)."""
    before = _process_state()
    env = {name: os.environ.get(name) for name in _CODE_SET_ENV}
    levels = {name: logging.getLogger(name).level for name in _CODE_SET_LOGGERS}
    try:
        yield
    finally:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        after = _process_state()
        leaked = {key: (before[key], after[key]) for key in before if after[key] != before[key]}
        if leaked:
            dtype, threads, (deterministic, warn_only), grad, cwd = before.values()
            torch.set_default_dtype(dtype)
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_grad_enabled(grad)
            if cwd is not None:
                os.chdir(cwd)
    if leaked:  # reached only when the block itself raised nothing
        pytest.fail("the test left process-wide state changed (before -> after): "
                    + "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in leaked.items())
                    + "; restore it in the test (a fixture, monkeypatch, or conftest.default_dtype)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow(reason)`` (a cheaper test covers their path in the default suite) run only with
    ``REPRO_SLOW=1``; skipped, they say why and how to run them."""
    if os.environ.get("REPRO_SLOW"):
        return
    for item in items:
        mark = item.get_closest_marker("slow")
        if mark is not None:
            why = mark.args[0] if mark.args else "long"
            item.add_marker(pytest.mark.skip(reason=f"slow: {why}; set REPRO_SLOW=1 to run it"))


@pytest.fixture(autouse=True)
def _scoped_process_state() -> Iterator[None]:
    """Every test runs in ``scoped_process_state``: one that changes a process-wide setting restores it through a
    fixture, ``monkeypatch`` or ``default_dtype``. Autouse without ``monkeypatch``: set up before, torn down after,
    the fixtures a test requests (``run_dir``'s chdir is undone before the check)."""
    with scoped_process_state():
        yield


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The project's caches (resolved configs, reference features; ``repro.cachefiles.cache_root``) live in a folder
    of this test session, not in the user's ~/.cache/repro: what a test finds cached was written in this session,
    so no run of the suite depends on what an earlier one left there (or on which entries its pruning kept)."""
    before = os.environ.get("REPRO_CACHE_DIR")
    os.environ["REPRO_CACHE_DIR"] = str(tmp_path_factory.mktemp("repro-cache"))
    yield
    if before is None:
        os.environ.pop("REPRO_CACHE_DIR", None)
    else:
        os.environ["REPRO_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("REPRO_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"MNIST not found under {root}; set REPRO_DATA_DIR to the folder holding MNIST/raw")
    return root


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fake_native_images(monkeypatch: pytest.MonkeyPatch, native: dict[str, tuple[int, int]]) -> None:
    """Test stand-in for data sets not on this machine: ``load_images`` returns 64 random uint8 images of the
    set's native (channels, size) and random labels of 10 classes (none for STL-10's unlabelled split)."""
    from repro.data import module as data_module

    def fake(name: str, root: object, download: bool,
             image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        c, s = native[name]
        labels = None if name == "stl10" else torch.randint(0, 10, (64,))
        return torch.randint(0, 256, (64, c, s, s), dtype=torch.uint8), labels

    monkeypatch.setattr(data_module, "load_images", fake)


class Unsafe:
    """Unpickling this opens (creates) ``path``: stands for any code a crafted file could run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return builtins.open, (str(self.path), "w")


def load_script(path: str) -> types.ModuleType:
    """A script of the repository that is not part of the package (``benchmarks/``, ``tools/``), as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(config: str, *extra: str):  # -> repro.fit.ReproCLI (imported late: Lightning is slow to import)
    """A committed config built through the CLI (nothing trains), without a logger."""
    from repro.fit import ReproCLI

    return ReproCLI(args=["--config", str(REPO_ROOT / config), "--trainer.logger", "false", *extra])

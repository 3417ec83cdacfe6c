"""Shared fixtures: the MNIST folder (from REPRO_DATA_DIR) and an in-process CLI runner."""
from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest
import torch

from repro import REPO_ROOT

# The README's test command passes a relative REPRO_DATA_DIR (../shared/data); tests chdir into
# temporary folders, so resolve it once, against the directory pytest was started from.
if os.environ.get("REPRO_DATA_DIR"):
    os.environ["REPRO_DATA_DIR"] = str(Path(os.environ["REPRO_DATA_DIR"]).resolve())

# The test models are tiny: one intra-op thread avoids OpenMP oversubscription (10x faster on 2 shared cores).
torch.set_num_threads(1)


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


def load_config(config: str, *extra: str):  # -> repro.fit.ReproCLI (imported late: Lightning is slow to import)
    """A committed config built through the CLI (nothing trains), without a logger."""
    from repro.fit import ReproCLI

    return ReproCLI(args=["--config", str(REPO_ROOT / config), "--trainer.logger", "false", *extra])

"""The data module: shapes, value ranges, toy geometry and the missing-data error."""
from __future__ import annotations


import pytest
import torch

from repro.data import DATASETS, DataNotFoundError, GANDataModule


@pytest.mark.parametrize(
    "name,radius,std", [("ring8", 1.0, 0.01), ("wgangp-8gaussians", 2.0 / 1.414, 0.02 / 1.414)]
)
def test_rings(name, radius, std):
    dm = GANDataModule(name, batch_size=128, num_samples=4096)
    dm.setup()
    assert dm.data.shape == (4096, 2)
    assert torch.allclose(dm.mixture.centers.norm(dim=1), torch.full((8,), radius), atol=1e-5)
    assert dm.mixture.std == pytest.approx(std)
    r = dm.data.norm(dim=1)
    assert (r - radius).abs().max() < 6 * std


@pytest.mark.parametrize("name,n,spacing", [("grid25", 25, 2.0), ("wgangp-25gaussians", 25, 2.0 / 2.828)])
def test_grids(name, n, spacing):
    dm = GANDataModule(name, num_samples=1000)
    dm.setup()
    xs = dm.mixture.centers[:, 0].unique()
    assert len(dm.mixture.centers) == n and len(xs) == 5
    assert torch.allclose(xs.diff(), torch.full((4,), spacing), atol=1e-5)


def test_swissroll_range():
    dm = GANDataModule("swissroll", num_samples=2000)
    dm.setup()
    assert dm.data.shape == (2000, 2) and dm.mixture is None
    assert dm.data.abs().max() < 2.5


def test_toy_batches_by_index():
    dm = GANDataModule("ring8", batch_size=64, num_samples=1000)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 1000 // 64
    assert all(b.shape == (64, 2) for b in batches)


def test_mnist_shapes_and_range(mnist_root):
    dm = GANDataModule("mnist", batch_size=32, data_root=str(mnist_root), num_samples=512)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (32, 1, 28, 28) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.min() == -1 and batch.max() == 1
    assert dm.labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_resized_to_32(mnist_root):
    dm = GANDataModule("mnist", batch_size=8, data_root=str(mnist_root), num_samples=64, image_size=32)
    assert next(iter(dm.train_dataloader())).shape == (8, 1, 32, 32)


def test_stacked_mnist_keeps_triples(mnist_root):
    dm = GANDataModule("stacked-mnist", batch_size=16, data_root=str(mnist_root), num_samples=1000)
    dm.setup()
    assert dm.data.shape == (1000, 3, 28, 28) and dm.labels.shape == (1000, 3)
    assert len({tuple(t) for t in dm.labels.tolist()}) > 500  # ~1000 triples possible


def test_digits_upsampled():
    dm = GANDataModule("digits", batch_size=16)
    b = next(iter(dm.train_dataloader()))
    assert b.shape == (16, 1, 32, 32) and b.min() >= -1 and b.max() <= 1


def test_missing_data_names_the_folder(tmp_path):
    dm = GANDataModule("mnist", data_root=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError) as exc:
        dm.setup()
    assert str(tmp_path) in str(exc.value) and "MNIST/raw" in str(exc.value)


def test_unknown_dataset_lists_valid():
    with pytest.raises(ValueError) as exc:
        GANDataModule("cifar100")
    assert all(name in str(exc.value) for name in DATASETS)

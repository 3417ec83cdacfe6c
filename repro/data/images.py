"""Image data sets loaded once into memory as uint8 tensors of shape (N, C, H, W)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DataNotFoundError", "DataUnreadableError", "load_images", "load_test_images", "IMAGE_SETS", "TEST_SETS",
           "resize_uint8", "stack_digits"]


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not be downloaded."""


class DataUnreadableError(ValueError):
    """A data set's files are on disk but cannot be read (truncated, corrupt, not images)."""


# Files whose presence means torchvision will find the set without downloading.
_EXPECTED = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_1",
    "stl10": "stl10_binary/unlabeled_X.bin",
    "svhn": "train_32x32.mat",
}


TEST_SETS = tuple(_EXPECTED)  # the sets with a held-out test split (STL-10: its labelled test set)


def _missing(name: str, root: Path, err: Exception) -> DataNotFoundError:
    return DataNotFoundError(
        f"data set {name!r} not found under {root.resolve()} (looked for {_EXPECTED[name]}) and it "
        f"could not be downloaded ({type(err).__name__}: {err}). Put the files there in torchvision's "
        f"layout, or point data.data_root (or the REPRO_DATA_DIR environment variable) at the folder "
        f"that holds them."
    )


def _torchvision(name: str, root: Path, download: bool, train: bool):
    import torchvision.datasets as tvd

    if not (root / _EXPECTED[name]).exists() and not download:
        return None
    if name == "mnist":
        return tvd.MNIST(str(root), train=train, download=download)
    if name == "cifar10":
        return tvd.CIFAR10(str(root), train=train, download=download)
    if name == "svhn":  # training: "train" + "extra" (604,388 digits), as the xICFG authors' code
        splits = ("train", "extra") if train else ("test",)
        return [tvd.SVHN(str(root), split=split, download=download) for split in splits]
    return tvd.STL10(str(root), split="unlabeled" if train else "test", download=download)


def _load_torchvision(name: str, root: Path, download: bool, train: bool) -> tuple[Tensor, Tensor | None]:
    try:
        ds = _torchvision(name, root, download, train)
    except Exception as err:  # torchvision raises RuntimeError / URLError / OSError offline
        folder = (root / _EXPECTED[name]).parent
        if "not found" in str(err).lower() or not folder.is_dir() or not any(folder.iterdir()):
            raise _missing(name, root, err) from None
        raise DataUnreadableError(
            f"data set {name!r}: the files in {folder.resolve()} are there but cannot be read ({type(err).__name__}: "
            f"{err}); one is truncated or corrupt: copy it again, or delete the folder and let data.download "
            "fetch the set again") from None
    if ds is None:
        raise _missing(name, root, FileNotFoundError("download disabled"))
    if name == "mnist":
        return ds.data.unsqueeze(1), ds.targets
    if name == "cifar10":
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    if name == "svhn":
        return torch.cat([torch.from_numpy(part.data) for part in ds]), torch.cat([torch.from_numpy(part.labels) for part in ds])
    return torch.from_numpy(ds.data), None


def _load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (values 0..16), mapped to uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    return images, torch.from_numpy(d.target)


def _load_folder(root: Path, image_size: int | None) -> tuple[Tensor, Tensor]:
    """Every image under ``root`` (torchvision ImageFolder layout), RGB, as uint8, and its class folder's
    index as its label; each resized to ``image_size`` as it is read, if given (so the images may differ in size)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    if not root.is_dir():
        raise DataNotFoundError(f"image_folder: {root.resolve()} is not a directory; set data.data_root")
    try:
        folder = ImageFolder(str(root))
    except FileNotFoundError:  # torchvision: no class folder or no file with an image extension
        raise DataNotFoundError(f"image_folder: no images under {root.resolve()} (expected <root>/<class>/<image>); "
                                "set data.data_root") from None
    images = []
    for path, _ in folder.samples:
        try:
            image = pil_to_tensor(folder.loader(path))
        except Exception as err:  # PIL: UnidentifiedImageError, OSError for a truncated file, ...
            raise DataUnreadableError(f"image_folder: cannot read {path} ({type(err).__name__}: {err}); "
                                      "remove or replace that file") from None
        images.append(image if image_size is None else resize_uint8(image[None], image_size)[0])
    sizes = sorted({tuple(image.shape[1:]) for image in images})
    if len(sizes) > 1:
        raise ValueError(f"image_folder: images differ in size ({', '.join(f'{w}x{h}' for h, w in sizes[:3])}"
                         f"{', ...' if len(sizes) > 3 else ''}); set data.image_size to resize them to one size")
    return torch.stack(images), torch.tensor([label for _, label in folder.samples])


def resize_uint8(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Bilinear (antialiased) resize of a uint8 batch, done once at load time, in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(out)


def stack_digits(images: Tensor, labels: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Stacked MNIST (Srivastava et al. 2017; Lin et al. 2018): three random digits as RGB channels.

    Returns images (n, 3, H, W) and each sample's digit triple (n, 3), the mode being the triple.
    """
    idx = torch.randint(len(images), (n, 3), generator=generator)
    return images[idx, 0], labels[idx]


IMAGE_SETS = ("mnist", "digits", "cifar10", "stl10", "svhn", "image_folder", "stacked-mnist")


def load_images(name: str, root: Path, download: bool, image_size: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Training images (uint8, N x C x H x W) and labels (or None) of a named set (an image folder's
    resized to ``image_size`` on reading, when given)."""
    if name == "digits":
        return _load_digits()
    if name == "image_folder":
        return _load_folder(root, image_size)
    return _load_torchvision(name, root, download, train=True)


def load_test_images(name: str, root: Path, download: bool) -> tuple[Tensor, Tensor | None]:
    """Test-split images (uint8, N x C x H x W) and labels of one of ``TEST_SETS``."""
    if name not in TEST_SETS:
        raise ValueError(f"data set {name!r} has no test split here; sets with one: {', '.join(TEST_SETS)}")
    return _load_torchvision(name, root, download, train=False)

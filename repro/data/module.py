"""GANDataModule: one LightningDataModule for every variant and every data set."""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from repro.data.images import IMAGE_SETS, load_images, resize_uint8, stack_digits
from repro.data.loader import InMemoryBatches
from repro.data.toy import TOY_SETS, Geometry, ToyMixture, make_toy
from repro.pixels import to_float

__all__ = ["GANDataModule", "DATASETS", "default_data_root"]

TOY_NAMES = (*TOY_SETS, "mixture", "swissroll")
DATASETS = (*TOY_NAMES, *IMAGE_SETS)
_NATIVE_SIZE = {"mnist": 28, "stacked-mnist": 28, "digits": 8, "cifar10": 32, "stl10": 96, "svhn": 32}
_DEFAULT_SIZE = {"digits": 32, "stl10": 48}  # STL-10 at 48x48 as in the SN-GAN paper
# Classes of the labelled sets; stacked MNIST's class is its digit triple (100 d1 + 10 d2 + d3), the mode its
# metrics count. A toy mixture's class is its component, an image folder's its class folder.
_NUM_CLASSES = {"mnist": 10, "digits": 10, "cifar10": 10, "svhn": 10, "stacked-mnist": 1000}


def default_data_root() -> Path:
    """``$REPRO_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("REPRO_DATA_DIR", "data"))


class GANDataModule(L.LightningDataModule):
    """Real samples for GAN training, held in memory and batched by index.

    Batches are image tensors; with ``set_labelled`` (the model calls it when it has ``num_classes``) they
    are ``(images, labels)`` pairs, labels in ``[0, num_classes)`` (-1: unknown, in a model's own labels).

    Args:
        dataset: one of ``DATASETS``; ``mixture`` is the 2-D mixture that ``mixture`` describes.
        batch_size: real samples per discriminator step (per device under DDP). The model sets how many
            such batches one training step takes (``set_batches_per_step``; ``n_dis`` for the GAN loop).
        data_root: folder in torchvision's layout; default ``$REPRO_DATA_DIR`` or ``./data``.
        image_size: output side length for image sets (default: native, 32 for digits, 48 for STL-10).
        num_workers: kept for API compatibility; in-memory batching needs no workers.
        seed: seed of the toy samples, stacked-MNIST triples, subsets and batch order.
        num_samples: use only the first ``num_samples`` training items (toy: how many points to draw).
        download: let torchvision try to download a missing set.
        mixture: the geometry of ``dataset: mixture`` (``repro.data.toy.Geometry``; the named 2-D sets are presets).
    """

    def __init__(
        self,
        dataset: str = "ring8",
        batch_size: int = 64,
        data_root: str | None = None,
        image_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        download: bool = True,
        mixture: Geometry | None = None,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
        if (dataset == "mixture") != (mixture is not None):
            raise ValueError(
                "data.mixture goes with data.dataset: mixture (and that data set needs it); "
                f"got dataset {dataset!r}, mixture {mixture}. Named 2-D sets: {', '.join(TOY_SETS)}"
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"data.image_size must be >= 1 pixel, got {image_size}")
        if num_samples is not None and num_samples < batch_size:
            raise ValueError(f"data.num_samples ({num_samples}) must be >= data.batch_size ({batch_size})")
        root = Path(data_root) if data_root is not None else default_data_root()
        if data_root is not None and dataset not in TOY_NAMES and dataset != "digits" and not root.is_dir():
            raise NotADirectoryError(f"data.data_root {root.resolve()} is not a directory")
        self.dataset, self.batch_size, self.data_root = dataset, batch_size, root
        self.image_size = image_size if image_size is not None else _DEFAULT_SIZE.get(dataset, _NATIVE_SIZE.get(dataset))
        self.num_workers, self.seed, self.num_samples, self.download = num_workers, seed, num_samples, download
        self.geometry = mixture
        self.batches_per_step = 1
        self.labelled = False
        self.served_labels: Tensor | None = None  # the model's labels for the training items (``set_labelled``)
        self.data: Tensor | None = None
        self.labels: Tensor | None = None  # class labels, or digit triples for stacked-mnist; None if the set has none
        self.mixture: ToyMixture | None = None

    @property
    def is_toy(self) -> bool:
        return self.dataset in TOY_NAMES

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, known after ``setup``."""
        self.setup()
        return tuple(self.data.shape[1:])

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        if self.is_toy:
            self.data, self.labels, self.mixture = make_toy(self.dataset, self.num_samples or 100_000, self.seed,
                                                            self.geometry)
            return
        if self.dataset == "stacked-mnist":
            digits, labels = load_images("mnist", self.data_root, self.download)
            n = self.num_samples or 128_000  # PacGAN's pre-generated VEEGAN-setting set
            images, self.labels = stack_digits(digits, labels, n, torch.Generator().manual_seed(self.seed))
        else:
            images, self.labels = load_images(self.dataset, self.data_root, self.download, self.image_size)
            if self.num_samples is not None:
                images = images[: self.num_samples]
                self.labels = None if self.labels is None else self.labels[: self.num_samples]
        # an image folder without data.image_size keeps its images' own size
        self.data = (images if self.image_size is None else resize_uint8(images, self.image_size)).contiguous()

    @property
    def class_labels(self) -> Tensor | None:
        """Each sample's class (stacked MNIST: its digit triple as 100 d1 + 10 d2 + d3); None without labels."""
        self.setup()
        if self.dataset == "stacked-mnist":
            return self.labels[:, 0] * 100 + self.labels[:, 1] * 10 + self.labels[:, 2]
        return self.labels

    @property
    def num_classes(self) -> int | None:
        """Number of classes of the set's labels (known after ``setup``); None for a set without labels."""
        self.setup()
        if self.labels is None:
            return None
        if self.mixture is not None:
            return len(self.mixture.centers)
        return _NUM_CLASSES.get(self.dataset, int(self.labels.max()) + 1)

    def check_labels(self, num_classes: int) -> None:
        """One clear ``ValueError`` unless the set has labels of exactly ``num_classes`` classes."""
        have = self.num_classes
        if have is None:
            why = "STL-10's unlabeled split has none" if self.dataset == "stl10" else "it has none"
            raise ValueError(f"model.num_classes {num_classes} needs class labels, but data set {self.dataset!r} has no "
                             f"labels ({why}); use a labelled set (mnist, cifar10, stacked-mnist, digits, svhn, "
                             "image_folder, a toy mixture) or set model.num_classes: null")
        if have != num_classes:
            raise ValueError(f"model.num_classes is {num_classes} but data set {self.dataset!r} has {have} classes; "
                             f"set model.num_classes: {have} (and the nets' num_classes)")

    def set_labelled(self, num_classes: int | None, labels: Tensor | None = None) -> None:
        """Serve ``(images, labels)`` batches when ``num_classes`` is set, image batches alone otherwise (the model
        calls this at setup). The labels are the set's own (checked to have ``num_classes`` classes), or ``labels``:
        the model's, one per training item, in ``[0, num_classes)`` or -1 for an item whose label is unknown."""
        if num_classes is None:
            self.labelled, self.served_labels = False, None
            return
        if labels is None:
            self.check_labels(num_classes)
        else:
            self.setup()
            if labels.shape != (len(self.data),) or labels.is_floating_point():
                raise ValueError(f"the model's training labels must be {len(self.data)} integers (one per training "
                                 f"item), got shape {tuple(labels.shape)} of {labels.dtype}")
            if len(labels) and not -1 <= int(labels.min()) <= int(labels.max()) < num_classes:
                raise ValueError(f"the model's training labels must lie in [-1, {num_classes}), got "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        self.labelled, self.served_labels = True, labels

    def set_batches_per_step(self, n: int) -> None:
        """Serve ``n`` real batches per training step, as one tensor of ``n * batch_size`` rows (the model
        calls this at setup: one GAN iteration takes ``n_dis`` batches)."""
        if n < 1:
            raise ValueError(f"batches per step must be >= 1, got {n}")
        self.batches_per_step = n

    def train_dataloader(self) -> InMemoryBatches:
        self.setup()
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        # Lightning saves and restores this loader's position (state_dict) in checkpoints.
        labels = None if not self.labelled else self.class_labels if self.served_labels is None else self.served_labels
        return InMemoryBatches(self.data, self.batch_size * self.batches_per_step, self.seed, rank, world, labels=labels)

    def real_batch(self, n: int, seed: int = 0) -> Tensor:
        """``n`` real samples in model space (floats; images in [-1, 1]) for plots and metrics."""
        self.setup()
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(seed))[:n]
        x = self.data[idx]
        return to_float(x) if x.dtype == torch.uint8 else x

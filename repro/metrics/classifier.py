"""The MNIST classifier repro trains itself: the evaluator behind classifier FID/KID/IS and stacked-MNIST modes.

A small CNN in the spirit of the Keras ``mnist_cnn`` PacGAN uses (Lin et al. 2018, Sec. 5.2: a
pretrained MNIST classifier labels each stacked channel) and of TF-GAN's MNIST classifier score
(Odena et al. 2018 replace Inception by an MNIST classifier): two strided 5x5 convolutions, a
128-unit hidden layer (the penultimate features for FID/KID) and 10 logits (the softmax for IS).
Strided convolutions instead of max pooling keep a from-scratch CPU training run short.

Training is deterministic: fixed seeds, one fixed batch order, Adam with a one-cycle schedule.
``train_classifier`` writes the weights and a JSON record (command, test accuracy, sha256) beside them.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.checkpoints import safe_load
from repro.data.images import load_images, load_test_images
from repro.pixels import to_float

__all__ = [
    "MNISTClassifier",
    "CLASSIFIER_WEIGHTS",
    "train_classifier",
    "load_classifier",
    "sha256_file",
    "classifier_accuracy",
]

CLASSIFIER_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "mnist_classifier.pt"


class MNISTClassifier(nn.Module):
    """28x28 grey digits in [-1, 1] -> 10 logits; ``features(x)`` gives the 128-d penultimate layer."""

    def __init__(self, width: int = 16, hidden: int = 128, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 5, 2, 2), nn.ReLU(),           # 28 -> 14
            nn.Conv2d(width, 2 * width, 5, 2, 2), nn.ReLU(),   # 14 -> 7
            nn.Flatten(),
            nn.Linear(2 * width * 49, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_classes)
        self.feature_dim = hidden

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.inference_mode()
def classifier_accuracy(net: MNISTClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` (uint8) whose argmax logit equals the label."""
    net.eval()
    correct = sum(
        int((net(to_float(x)).argmax(1) == y).sum()) for x, y in zip(images.split(batch_size), labels.split(batch_size))
    )
    return correct / len(labels)


def train_classifier(
    data_root: Path,
    out: Path = CLASSIFIER_WEIGHTS,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 4e-3,
    seed: int = 0,
    num_train: int | None = None,
    command: str = "",
) -> dict[str, object]:
    """Train ``MNISTClassifier`` on the MNIST training set, save its weights to ``out`` and a record to
    ``out.with_suffix('.json')``; returns the record (test accuracy on the 10,000 test digits, sha256)."""
    images, labels = load_images("mnist", Path(data_root), download=False)
    test_images, test_labels = load_test_images("mnist", Path(data_root), download=False)
    if num_train is not None:
        images, labels = images[:num_train], labels[:num_train]
    torch.manual_seed(seed)
    net = MNISTClassifier()
    x_all = to_float(images)
    steps_per_epoch = len(x_all) // batch_size
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
    order = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), generator=order)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(net(x_all[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    accuracy = classifier_accuracy(net, test_images, test_labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    record: dict[str, object] = {
        "command": command,
        "test_accuracy": accuracy,
        "sha256": sha256_file(out),
        "weights": out.name,
        "train_seconds": round(seconds, 1),
        "recipe": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                   "num_train": len(x_all), "optimizer": "adam, one-cycle", "torch": torch.__version__},
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_classifier(path: Path = CLASSIFIER_WEIGHTS) -> tuple[MNISTClassifier, str]:
    """The trained classifier (eval mode, frozen) and its weights' sha256, checked against the record
    written beside it; a missing or altered file is one clear error naming the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"MNIST classifier weights {path} not found; create them with `repro train-classifier` "
            f"(or pass the path of trained weights)"
        )
    digest = sha256_file(path)
    record_path = path.with_suffix(".json")
    if record_path.exists():
        expected = json.loads(record_path.read_text())["sha256"]
        if digest != expected:
            raise ValueError(
                f"classifier weights {path} have sha256 {digest[:12]}..., but {record_path.name} records "
                f"{expected[:12]}...; re-run `repro train-classifier` or restore the committed file"
            )
    net = MNISTClassifier()
    net.load_state_dict(safe_load(path, "evaluation.extractor_weights"))
    return net.eval().requires_grad_(False), digest

"""S3GAN and S2GAN (Lucic et al. 2019) and TAN's lens with a conditional D: true labels where given and predicted
ones elsewhere, the fixed labelled subset, S2GAN's clustering and pre-stage, and 20 CLI steps of S2GAN."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_conditional import _EchoG, _IdentityD, _SpyD
from torch import Tensor, nn

from repro.cli import main
from repro.data.module import GANDataModule
from repro.errors import UserError
from repro.fit import REPO_ROOT
from repro.nets import (
    LabelPredictingDiscriminator, ProjectionDiscriminator, StandardCNNDiscriminator, StandardCNNGenerator,
)
from repro.nets.lens import MLPLens
from repro.pixels import to_uint8
from repro.variants import S2GAN, S3GAN, TAN, GANModule, ProjectionGAN
from repro.variants.s2gan import MissingClusterLabels, cluster_features
from repro.variants.s3gan import labelled_subset


def _predicting_d() -> LabelPredictingDiscriminator:
    """phi(x) = x (3 features); psi = x0 - x2 + 0.5; embeddings e0 = (0, 0, 1), e1 = (2, 1, 0); c(phi) = (x0, x1)."""
    d = LabelPredictingDiscriminator(ProjectionDiscriminator(_IdentityD([1.0, 0.0, -1.0], 0.5), 2, norm="none"))
    with torch.no_grad():
        d.projection.embed.weight.copy_(torch.tensor([[0.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))
        d.classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        d.classifier.bias.zero_()
    return d


PHI = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])


def test_s3gan_uses_true_labels_where_available_and_predictions_elsewhere() -> None:
    """Row 0 has label 0; rows 1 and 2 are unlabelled (-1) and c predicts 1 (x1 > x0) and 0 (x0 > x1) for them."""
    d = _predicting_d()
    x = PHI.clone().requires_grad_(True)
    out, logits = d.outputs(x, torch.tensor([0, -1, -1]))
    # psi = -1.5, -1.5, -3.5; <e_0, phi_0> = 3, <e_1, phi_1> = 4, <e_0, phi_2> = 4
    assert out.tolist() == [1.5, 2.5, 0.5]
    assert torch.equal(logits, PHI[:, :2])
    assert torch.equal(d(PHI, torch.tensor([1, 1, 1])), torch.tensor([2.5, 2.5, -4.5]))  # all given: none predicted
    out.sum().backward()  # the predicted label is a hard argmax: D's output sends no gradient to the classifier
    assert d.classifier.weight.grad is None or not d.classifier.weight.grad.any()


class _G(nn.Module):
    z_dim, num_classes = 2, 2

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 3))

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return z @ self.w + y.float()[:, None]


def _s3gan(**kwargs) -> S3GAN:
    model = S3GAN(_G(), ProjectionDiscriminator(_IdentityD([1.0, 0.0, -1.0], 0.5), 2, norm="none"), num_classes=2,
                  d_rotation_weight=0.0, g_rotation_weight=0.0, **kwargs)
    fresh = _predicting_d()
    model.predictor.load_state_dict(fresh.state_dict())
    return model


def test_s3gan_d_loss_is_hinge_plus_classifier_cross_entropy_on_labelled_reals() -> None:
    model = _s3gan(class_weight=0.5)
    assert model.discriminator is model.predictor and not model.d_regularizers  # rotation off: no head, no term
    y, fake, y_fake = torch.tensor([0, -1, -1]), torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([1, 0])
    loss = model.discriminator_loss(PHI, fake, y, y_fake)
    real_out, fake_out = torch.tensor([1.5, 2.5, 0.5]), torch.tensor([0.5 + 0.0, 1.5 + 0.0])
    hinge = F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()
    ce = -torch.log_softmax(PHI[0, :2], 0)[0]  # only row 0 has a label
    assert loss.item() == pytest.approx((hinge + 0.5 * ce).item(), rel=1e-6)
    # no labelled example in the batch: the classifier term is 0, not NaN
    none = model.discriminator_loss(PHI, fake, torch.tensor([-1, -1, -1]), y_fake)
    assert none.item() == pytest.approx((F.relu(1 - torch.tensor([2.5, 2.5, 0.5])).mean()
                                         + F.relu(1 + fake_out).mean()).item(), rel=1e-6)


def test_s3gan_keeps_the_rotation_losses_by_default_and_refuses_a_plain_d() -> None:
    g = StandardCNNGenerator(z_dim=8, image_size=28, channels=1, width=2, num_classes=10)
    d = ProjectionDiscriminator(StandardCNNDiscriminator(image_size=28, channels=1, width=2), 10)
    model = S3GAN(g, d, num_classes=10)
    assert [r.weight for r in model.d_regularizers] == [1.0] and [r.weight for r in model.g_regularizers] == [0.2]
    assert model.predictor is model.discriminator.inner and model.discriminator.num_classes == 10
    with pytest.raises(ValueError, match="S3GAN needs repro.nets.ProjectionDiscriminator"):
        S3GAN(g, StandardCNNDiscriminator(image_size=28, channels=1, width=2), num_classes=10)
    with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\]"):
        S3GAN(g, ProjectionDiscriminator(StandardCNNDiscriminator(28, 1, width=2), 10), 10, labelled_fraction=0.0)


@pytest.mark.parametrize("n, fraction", [(1000, 0.1), (1000, 0.2), (7, 0.5), (60_000, 0.01), (10, 1.0)])
def test_labelled_subset_is_fixed_and_of_the_requested_fraction(n: int, fraction: float) -> None:
    mask = labelled_subset(n, fraction, seed=3)
    assert mask.dtype == torch.bool and mask.shape == (n,) and int(mask.sum()) == round(fraction * n)
    assert torch.equal(mask, labelled_subset(n, fraction, seed=3))
    if fraction < 1:
        assert not torch.equal(mask, labelled_subset(n, fraction, seed=4))


def test_labelled_subset_refuses_an_empty_subset() -> None:
    with pytest.raises(ValueError, match="at least one"):
        labelled_subset(10, 0.01, 0)


def test_s3gan_serves_the_same_labelled_items_every_epoch(mnist_root: Path) -> None:
    """The loader serves the true label on the fixed subset and -1 elsewhere: over each whole epoch exactly the
    subset's items come labelled, each with its own label (not a per-batch draw)."""
    model = _s3gan(labelled_fraction=0.25)
    model.num_classes = 10  # the hand-made nets are 2-class; only the labels are looked at here
    dm = GANDataModule("mnist", batch_size=16, data_root=str(mnist_root), num_samples=256)
    labels = model.training_labels(dm)
    mask = labelled_subset(256, 0.25, 0)
    assert torch.equal(labels[mask], dm.class_labels[mask]) and (labels[~mask] == -1).all()
    dm.set_labelled(10, labels)
    loader = dm.train_dataloader()
    truth = {bytes(x.numpy()): int(c) for x, c in zip(dm.data, dm.class_labels)}
    for _epoch in range(2):
        seen = [(bytes(to_uint8(x).numpy()), int(c)) for xb, yb in loader
                for x, c in zip(xb, yb)]
        known = [(key, c) for key, c in seen if c >= 0]
        assert len(seen) == 256 and len(known) == 64
        assert all(truth[key] == c for key, c in known)


def test_data_module_checks_a_models_labels(mnist_root: Path) -> None:
    dm = GANDataModule("mnist", batch_size=16, data_root=str(mnist_root), num_samples=64)
    with pytest.raises(ValueError, match="64 integers"):
        dm.set_labelled(10, torch.zeros(63, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lie in \[-1, 10\)"):
        dm.set_labelled(10, torch.full((64,), 10))


# ----------------------------------------------------------------- S2GAN
def test_clustering_yields_labels_in_range_and_is_deterministic_under_a_seed() -> None:
    """Three far-apart blobs: k-means puts each blob in one cluster, ids in [0, 3), the same for the same seed."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    features = (centers.repeat_interleave(40, 0) + torch.randn(120, 3, generator=g)).float()
    ids = cluster_features(features, 3, seed=1)
    assert ids.dtype == torch.long and ids.min() >= 0 and ids.max() < 3
    assert torch.equal(ids, cluster_features(features, 3, seed=1))
    assert all(len(set(ids[b * 40:(b + 1) * 40].tolist())) == 1 for b in range(3))
    assert len(set(ids.tolist())) == 3


def test_clustering_without_sklearn_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)  # import fails as if the package were missing
    with pytest.raises(UserError, match="pip install scikit-learn"):
        cluster_features(torch.randn(10, 2), 2, 0)


def _s2gan(cache: Path) -> S2GAN:
    torch.manual_seed(0)
    g = StandardCNNGenerator(z_dim=8, image_size=28, channels=1, width=2, num_classes=4)
    d = ProjectionDiscriminator(StandardCNNDiscriminator(image_size=28, channels=1, width=2), 4)
    return S2GAN(g, d, num_classes=4, rotation_steps=5, rotation_batch_size=16, cluster_cache_dir=str(cache))


def test_s2gan_pre_stage_is_deterministic_and_cached(mnist_root: Path, tmp_path: Path) -> None:
    model = _s2gan(tmp_path)
    dm = GANDataModule("mnist", batch_size=16, data_root=str(mnist_root), num_samples=128)
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    with pytest.raises(MissingClusterLabels, match="repro prepare"):
        model.training_labels(dm)
    first, loss = model.cluster_labels(dm)
    assert first.shape == (128,) and first.min() >= 0 and first.max() < 4 and loss > 0
    assert torch.equal(first, model.cluster_labels(dm)[0])  # same D, data and seed: same clusters
    assert all(torch.equal(v, model.discriminator.state_dict()[k]) for k, v in before.items())  # D untouched
    path = Path(model.prepare(dm))
    assert path.parent == tmp_path and model.preparation_missing(dm) is None
    assert torch.equal(model.training_labels(dm), first)
    dm.set_labelled(4, model.training_labels(dm))  # cluster ids, not the set's classes: served as they are
    assert not model.labels_are_classes


def test_s2gan_trains_20_cli_steps_after_its_pre_stage(run_dir: Path, mnist_root: Path) -> None:
    main(["fit", "--config", str(REPO_ROOT / "configs/mnist/s2gan.yaml"), "--data.data_root", str(mnist_root),
          "--data.num_samples", "1024", "--data.batch_size", "16", "--trainer.max_steps", "20",
          "--trainer.enable_progress_bar", "false", "--model.init_args.rotation_steps", "20",
          "--evaluation.n_samples", "200"])
    (record,) = run_dir.glob("runs/lightning_logs/version_*/metrics.json")
    metrics = json.loads(record.read_text())
    assert metrics["status"] == "finished" and metrics["generator_steps"] == 20
    assert len(list(run_dir.glob("runs/cluster_cache/mnist-*.pt"))) == 1


def test_per_class_metrics_see_no_classes_in_cluster_ids(tmp_path: Path) -> None:
    """The evaluation hands the metric families S3GAN's / a projection GAN's classes, but not S2GAN's cluster count
    (cluster k is not class k), so the per-class family measures nothing for S2GAN."""
    from repro.callbacks.evaluation import FinalEvaluation

    seen: list[int | None] = []
    family = SimpleNamespace(all_ranks=False, run=lambda ctx: (seen.append(ctx.num_classes), ({}, {}))[1])
    evaluation = FinalEvaluation()
    evaluation.selected = lambda dm: [family]
    trainer = SimpleNamespace(datamodule=None, global_rank=0, world_size=1)
    s2gan = _s2gan(tmp_path)
    evaluation.evaluate(trainer, s2gan)
    evaluation.evaluate(trainer, ProjectionGAN(s2gan.generator, s2gan.discriminator, num_classes=4))
    assert seen == [None, 4]


# ----------------------------------------------------------------- TAN with a conditional D
def test_tan_lens_update_hands_a_conditional_d_the_labels() -> None:
    model = TAN(_EchoG(), _SpyD(), MLPLens(2), num_classes=3)
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    y, y_fake = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0])
    adv, recon = model.lens_losses(real, fake, y, y_fake)
    (x_lensed, y_seen), (x_fake, y_fake_seen) = model.discriminator.calls
    assert torch.equal(y_seen, y) and torch.equal(y_fake_seen, y_fake) and torch.equal(x_fake, fake)
    assert torch.allclose(x_lensed, model.lens(real)) and torch.isfinite(adv) and torch.isfinite(recon)


def test_an_after_d_step_without_labels_is_refused_for_labelled_training() -> None:
    class Unlabelled(GANModule):
        def after_d_step(self, real: Tensor, fake: Tensor) -> None:
            pass

    with pytest.raises(ValueError, match="its after_d_step takes none"):
        Unlabelled(_EchoG(), _SpyD(), num_classes=3)

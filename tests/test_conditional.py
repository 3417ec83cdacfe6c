"""Class conditioning: conditional BN, the projection discriminator, AC-GAN, labelled data and sampling."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from repro.data.module import GANDataModule
from repro.nets import AuxiliaryClassifierDiscriminator, ProjectionDiscriminator, ResNetGenerator, StandardCNNGenerator
from repro.nets.base import Discriminator
from repro.nets.conditional_bn import (
    ClassConditionalBatchNorm1d,
    ClassConditionalBatchNorm2d,
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    ConditionalSequential,
)
from repro.variants import ACGAN, NSGAN, GANModule, ProjectionGAN


def _standardized(x: torch.Tensor) -> torch.Tensor:
    """Batch standardization per channel, written out (biased variance, eps 1e-5)."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("cls,shape", [(ClassConditionalBatchNorm2d, (6, 3, 4, 4)),
                                       (ClassConditionalBatchNorm1d, (6, 3))])
def test_class_conditional_bn_uses_the_class_gamma_beta(cls: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    bn = cls(3, num_classes=4)
    x = torch.randn(*shape) * 2 + 1
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    assert torch.allclose(bn(x, y), _standardized(x), atol=1e-5)  # gamma 1, beta 0 at initialization
    gamma = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    beta = torch.tensor([[0.0, 1.0, -1.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 3.0, 0.5]])
    with torch.no_grad():
        bn.gain.weight.copy_(gamma - 1)
        bn.bias.weight.copy_(beta)
    view = (6, 3) + (1,) * (len(shape) - 2)
    expected = _standardized(x) * gamma[y].view(view) + beta[y].view(view)
    assert torch.allclose(bn(x, y), expected, atol=1e-5)
    with pytest.raises(ValueError, match="integer labels"):
        bn(x, torch.randn(6, 4))


@pytest.mark.parametrize("cls,shape", [(ConditionalBatchNorm2d, (5, 3, 2, 2)), (ConditionalBatchNorm1d, (5, 3))])
def test_conditional_bn_from_a_vector(cls: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    bn = cls(3, cond_dim=2)
    x, c = torch.randn(*shape), torch.randn(5, 2)
    wg, wb = bn.gain.weight.detach(), bn.bias.weight.detach()
    view = (5, 3) + (1,) * (len(shape) - 2)
    expected = _standardized(x) * (1 + c @ wg.T).view(view) + (c @ wb.T).view(view)
    assert torch.allclose(bn(x, c), expected, atol=1e-5)
    with pytest.raises(ValueError, match="4 conditioning inputs"):
        bn(x, c[:4])


def test_conditional_sequential_hands_labels_to_conditional_layers_only() -> None:
    seq = ConditionalSequential(nn.Linear(2, 3), ClassConditionalBatchNorm1d(3, 2), nn.ReLU())
    out = seq(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))
    assert out.shape == (4, 3) and (out >= 0).all()


# ----------------------------------------------------------------- the projection and AC-GAN discriminators




class _IdentityD(Discriminator):
    """phi(x) = x (3 features), psi a linear head set by hand."""

    def __init__(self, weight: list[float], bias: float):
        super().__init__()
        self.set_body(nn.Identity(), 3, "none")
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([weight]))
            self.head.bias.fill_(bias)


def test_projection_d_is_psi_plus_embedding_inner_product() -> None:
    d = ProjectionDiscriminator(_IdentityD([1.0, 0.0, -1.0], 0.5), num_classes=2, norm="none")
    with torch.no_grad():
        d.embed.weight.copy_(torch.tensor([[0.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))
    phi = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    out = d(phi, torch.tensor([1, 0, 0]))
    # psi = 1 - 3 + 0.5 = -1.5 and -3.5; <e_1, phi> = 2 + 2 = 4, <e_0, phi> = 3 and 4
    assert out.tolist() == [2.5, 1.5, 0.5]
    with pytest.raises(ValueError, match="pass labels y"):
        d(phi)


def test_projection_embedding_is_spectrally_normalized_by_default() -> None:
    d = ProjectionDiscriminator(_IdentityD([1.0, 1.0, 1.0], 0.0), num_classes=4).eval()
    raw = d.embed.parametrizations.weight.original
    for _ in range(50):  # converge the stored power-iteration vectors
        d.embed.parametrizations.weight[0].power_iteration(raw.detach())
    assert torch.linalg.matrix_norm(d.embed.weight.detach(), ord=2).item() == pytest.approx(1.0, abs=1e-4)


def _acgan(w: float = 0.5, fake_class_loss: bool = True) -> ACGAN:
    torch.manual_seed(0)
    g = StandardCNNGenerator(z_dim=4, image_size=28, channels=1, width=2, num_classes=3)
    d = AuxiliaryClassifierDiscriminator(_IdentityD([1.0, -1.0, 0.5], 0.1), num_classes=3)
    return ACGAN(g, d, num_classes=3, aux_weight=w, fake_class_loss=fake_class_loss)


@pytest.mark.parametrize("fake_class_loss", [True, False])
def test_acgan_losses_are_source_plus_weighted_class_log_likelihood(fake_class_loss: bool) -> None:
    """Eqs. 2-3 written out; without ``fake_class_loss`` D's class term takes the real images only, G's is the same."""
    model = _acgan(fake_class_loss=fake_class_loss)
    d = model.discriminator
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    y, y_fake = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0, 1])
    # written out: -L_S = -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), -L_C = -log softmax(C(x))[y]
    src_r, src_f = d.head(real).squeeze(1), d.head(fake).squeeze(1)
    log_p = lambda x, c: torch.log_softmax(d.classifier(x), 1)[torch.arange(4), c]  # noqa: E731
    l_s = torch.log(torch.sigmoid(src_r)).mean() + torch.log(1 - torch.sigmoid(src_f)).mean()
    l_c = log_p(real, y).mean() + (log_p(fake, y_fake).mean() if fake_class_loss else 0)
    assert model.discriminator_loss(real, fake, y, y_fake).item() == pytest.approx((-l_s - 0.5 * l_c).item(), rel=1e-5)
    g_expected = -torch.log(torch.sigmoid(src_f)).mean() - 0.5 * log_p(fake, y_fake).mean()
    assert model.generator_loss(real, torch.zeros(4, 4), fake, y, y_fake).item() == pytest.approx(g_expected.item(),
                                                                                                rel=1e-5)


# ----------------------------------------------------------------- conditional generators and the loop
@pytest.mark.parametrize("make", [lambda: StandardCNNGenerator(8, 28, 1, 4, num_classes=5),
                                  lambda: ResNetGenerator(8, 32, 3, 0.05, num_classes=5)])
def test_conditional_generators_use_the_labels(make) -> None:
    torch.manual_seed(0)
    g = make()
    for m in g.modules():  # distinct gamma / beta per class
        if isinstance(m, ClassConditionalBatchNorm2d):
            nn.init.normal_(m.gain.weight)
            nn.init.normal_(m.bias.weight)
    z = torch.randn(1, 8).expand(4, 8)
    out = g(z, torch.tensor([0, 0, 3, 4]))
    assert torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    assert not torch.allclose(out[2], out[3])
    with pytest.raises(ValueError, match="pass labels y"):
        g(z)
    with pytest.raises(ValueError, match="takes no labels"):
        StandardCNNGenerator(8, 28, 1, 4)(z, torch.zeros(4, dtype=torch.long))


class _EchoG(nn.Module):
    """G(z, y): every output coordinate is y (so samples show the labels they were drawn for)."""

    z_dim, num_classes = 2, 3

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))
        self.seen: list[Tensor] = []

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        self.seen.append(y)
        return y.float()[:, None] + 0 * z + self.bias


class _SpyD(ProjectionDiscriminator):
    def __init__(self) -> None:
        super().__init__(_IdentityD([1.0, 0.0, 0.0], 0.0), num_classes=3)
        self.inner.body = nn.Linear(2, 3)
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls.append((x.detach(), y))
        return super().forward(x, y)


def test_sampling_with_given_or_random_labels() -> None:
    model = GANModule(_EchoG(), _SpyD(), num_classes=3)
    y = torch.tensor([2, 0, 1, 1])
    assert model.sample(y=y)[:, 0].tolist() == [2.0, 0.0, 1.0, 1.0]
    drawn = model.sample(200)[:, 0]
    assert set(drawn.tolist()) == {0.0, 1.0, 2.0}
    assert model.sample_grid()[:7, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    for bad in (torch.tensor([3]), torch.tensor([0.5]), torch.tensor([-1])):
        with pytest.raises(ValueError, match=r"integer labels in \[0, 3\)"):
            model.sample(y=bad)


def test_d_and_g_steps_hand_each_batch_its_labels() -> None:
    """Real samples reach D with their labels; fakes with the labels G made them for."""
    model = GANModule(_EchoG(), _SpyD(), num_classes=3)
    model._lean_steps = True  # plain backward / step: no trainer
    opt_d = torch.optim.SGD(model.discriminator.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(model.generator.parameters(), lr=0.1)
    real, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 2, 1, 0])
    model.d_step(real, opt_d, y=y)
    (x_real, y_real), (x_fake, y_fake) = model.discriminator.calls
    assert torch.equal(x_real, real) and torch.equal(y_real, y)
    assert torch.equal(y_fake, model.generator.seen[-1]) and torch.equal(x_fake[:, 0], y_fake.float())
    model.discriminator.calls.clear()
    model.g_step(real, opt_g, y=y)
    ((x_g, y_g),) = model.discriminator.calls  # non-saturating: D sees only the fakes
    assert torch.equal(y_g, model.generator.seen[-1]) and torch.equal(x_g[:, 0], y_g.float())


def test_label_mismatches_are_refused_at_construction() -> None:
    from repro.regularizers import GradientPenalty
    from repro.variants import FeatureMatchingGAN

    plain_g, plain_d = StandardCNNGenerator(8, 28, 1, 4), _IdentityD([1.0, 0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="model.generator .*takes no labels.*num_classes: 3"):
        GANModule(plain_g, _SpyD(), num_classes=3)
    with pytest.raises(ValueError, match="is class-conditional.*set model.num_classes: 3"):
        NSGAN(_EchoG(), plain_d)
    with pytest.raises(ValueError, match="GradientPenalty runs a net on inputs of its own"):
        GANModule(_EchoG(), _SpyD(), num_classes=3, d_regularizers=[GradientPenalty()])
    with pytest.raises(ValueError, match="FeatureMatchingGAN does not support class labels"):
        FeatureMatchingGAN(_EchoG(), _SpyD(), num_classes=3)
    with pytest.raises(ValueError, match="ProjectionGAN needs repro.nets.ProjectionDiscriminator"):
        ProjectionGAN(_EchoG(), plain_d, num_classes=3)
    with pytest.raises(ValueError, match="ACGAN needs repro.nets.AuxiliaryClassifierDiscriminator with num_classes 3"):
        ACGAN(_EchoG(), _SpyD(), num_classes=3)


def test_ema_standing_statistics_of_a_conditional_generator() -> None:
    torch.manual_seed(0)
    g = StandardCNNGenerator(8, 28, 1, 4, num_classes=3)
    d = ProjectionDiscriminator(_IdentityD([1.0, 0.0, 0.0], 0.0), num_classes=3)
    model = GANModule(g, d, num_classes=3, ema_decay=0.5)
    model.update_ema()
    out = model.sample(y=torch.tensor([0, 1, 2]))
    assert out.shape == (3, 1, 28, 28)
    bn = next(m.bn for m in model.generator_ema.modules() if isinstance(m, ClassConditionalBatchNorm2d))
    assert int(bn.num_batches_tracked) == 16  # re-estimated on labelled batches


# ----------------------------------------------------------------- labels from the data module
def _labels(dm: GANDataModule, num_classes: int) -> Tensor:
    dm.set_labelled(num_classes)
    x, y = next(iter(dm.train_dataloader()))
    assert len(x) == len(y) == dm.batch_size and y.dtype == torch.long
    assert 0 <= int(y.min()) and int(y.max()) < num_classes
    return y


def test_mnist_and_stacked_mnist_labels(mnist_root: Path) -> None:
    dm = GANDataModule("mnist", batch_size=256, data_root=str(mnist_root), num_samples=512)
    assert dm.num_classes == 10 and len(set(_labels(dm, 10).tolist())) == 10
    stacked = GANDataModule("stacked-mnist", batch_size=64, data_root=str(mnist_root), num_samples=256)
    y = _labels(stacked, 1000)
    batch_idx = next(iter(stacked.train_dataloader()))[1]
    assert torch.equal(y, batch_idx) and stacked.labels.shape == (256, 3)  # the triples stay the data's labels
    codes = stacked.class_labels
    assert torch.equal(codes, stacked.labels[:, 0] * 100 + stacked.labels[:, 1] * 10 + stacked.labels[:, 2])
    plain = GANDataModule("mnist", batch_size=8, data_root=str(mnist_root), num_samples=64)
    assert isinstance(next(iter(plain.train_dataloader())), Tensor)  # unlabelled by default: images alone


def test_toy_labels_are_mixture_components() -> None:
    dm = GANDataModule("ring8", batch_size=64, num_samples=640)
    y = _labels(dm, 8)
    x, _ = next(iter(dm.train_dataloader()))
    nearest = torch.cdist(x, dm.mixture.centers).argmin(1)
    assert torch.equal(nearest, y)
    with pytest.raises(ValueError, match="'swissroll' has no labels"):
        GANDataModule("swissroll", batch_size=8, num_samples=64).set_labelled(2)


def test_cifar10_stand_in_labels_and_stl10_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    from repro.data import module as data_module

    def fake(name: str, root: object, download: bool, image_size: int | None = None) -> tuple[Tensor, Tensor | None]:
        labels = None if name == "stl10" else torch.arange(64) % 10
        return torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), labels

    monkeypatch.setattr(data_module, "load_images", fake)
    assert len(set(_labels(GANDataModule("cifar10", batch_size=32), 10).tolist())) == 10
    with pytest.raises(ValueError, match="STL-10's unlabeled split has none"):
        GANDataModule("stl10", batch_size=8, image_size=32).set_labelled(10)
    with pytest.raises(ValueError, match="has 10 classes; set model.num_classes: 10"):
        GANDataModule("cifar10", batch_size=8).set_labelled(12)


def test_digits_and_image_folder_labels(tmp_path: Path) -> None:
    from PIL import Image

    _labels(GANDataModule("digits", batch_size=64), 10)
    for k, cls in enumerate(("cat", "dog", "eel")):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (80 * k, i, 0)).save(tmp_path / cls / f"{i}.png")
    dm = GANDataModule("image_folder", batch_size=12, data_root=str(tmp_path))
    assert dm.num_classes == 3
    x, y = next(iter(_with_labels(dm, 3)))
    assert torch.equal(((x[:, 0, 0, 0] + 1) * 127.5 / 80).round().long(), y)  # red channel 80 k in class k


def _with_labels(dm: GANDataModule, num_classes: int):
    dm.set_labelled(num_classes)
    return dm.train_dataloader()


# ----------------------------------------------------------------- per-class metrics
def test_per_class_metrics_of_a_generator_that_returns_real_digits(mnist_root: Path, tmp_path: Path) -> None:
    """A "generator" returning real digits of the asked class scores near the classifier's accuracy and a small
    intra-class FID; one returning the next class scores near 0 and a large intra-class FID."""
    from repro.metrics import registry
    from repro.metrics.per_class import evaluate
    from repro.pixels import to_float

    dm = GANDataModule("mnist", batch_size=8, data_root=str(mnist_root), num_samples=4000)
    dm.setup()
    pools = [to_float(dm.data[dm.labels == k]) for k in range(10)]

    def sampler(shift: int):
        def sample(n: int, y: Tensor) -> Tensor:
            pool = pools[(int(y[0]) + shift) % 10]
            return pool[torch.randperm(len(pool))[:n]]
        return sample

    settings = registry.EvaluationSettings(n_per_class=200, batch_size=100, cache_dir=tmp_path)
    ctx = registry.EvalContext(sampler(0), dm, torch.device("cpu"), "final", settings, num_classes=10)
    values, protocols = evaluate(ctx)
    assert values["class_acc200_classifier"] > 0.9 and values["class_acc200_classifier_min"] > 0.8
    assert len([k for k in values if k.startswith("intra_fid200_train_classifier_c")]) == 10
    assert all(registry.family_of_key(k).name == "per_class" for k in values) and protocols.keys() == values.keys()
    wrong, _ = evaluate(registry.EvalContext(sampler(1), dm, torch.device("cpu"), "final", settings, num_classes=10))
    assert wrong["class_acc200_classifier"] < 0.1
    assert wrong["intra_fid200_train_classifier"] > 3 * values["intra_fid200_train_classifier"]
    unconditional = registry.EvalContext(sampler(0), dm, torch.device("cpu"), "final", settings)
    assert evaluate(unconditional) == ({}, {})


def test_class_confusion_tool_rows_give_the_records_class_accuracy(mnist_root: Path, run_dir: Path, capsys) -> None:
    """``tools/class_confusion.py`` on a 4-update AC-GAN run: its matrix's rows hold the evaluation's own samples,
    so each row's diagonal share is the record's accuracy of that class, exactly; D's class head classifies the same
    samples and the real test digits."""
    from conftest import load_script
    from repro import REPO_ROOT
    from repro.cli import main
    from repro.record import read_json

    main(["fit", "--config", str(REPO_ROOT / "configs/mnist/acgan.yaml"), "--data.data_root", str(mnist_root),
          "--trainer.max_steps", "4", "--data.num_samples", "640", "--samples.every_n_steps", "0",
          "--evaluation.image_metrics", "true", "--evaluation.n_fid", "200", "--evaluation.n_is", "200",
          "--evaluation.n_per_class", "200", "--evaluation.n_reference", "2000", "--evaluation.reference_split", "test",
          "--evaluation.batch_size", "100", "--trainer.enable_progress_bar", "false"])
    run = run_dir / "runs/lightning_logs/version_0"
    record = read_json(run / "metrics.json")
    checkpoint = next(run.glob("checkpoints/*.ckpt")).relative_to(run)
    capsys.readouterr()
    load_script("tools/class_confusion.py").main([str(run_dir / "out"), str(run), "--checkpoint", str(checkpoint)])
    result = read_json(run_dir / "out/confusion.json")["results"][0]
    assert result["matches_record"] and all(sum(row) == 200 for row in result["counts"])
    assert [row[k] / 200 for k, row in enumerate(result["counts"])] == \
        [record["metrics"][f"class_acc200_classifier_c{k}"] for k in range(10)]
    assert all(sum(row) == 200 for row in result["d_counts"]) and len(result["d_real_accuracy"]) == 10  # D's head
    assert all(0 <= a <= 1 for a in result["d_real_accuracy"])
    out = capsys.readouterr().out
    assert (run_dir / "out/confusion.png").is_file() and "(equals the record)" in out and "D's class head" in out

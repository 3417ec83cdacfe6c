"""Improved Techniques for Training GANs (Salimans et al. 2016): each technique's formula on hand-made inputs."""
from __future__ import annotations

import math

import pytest
import torch

from repro.losses import objective
from repro.regularizers import HistoricalAveraging
from repro.nets import MinibatchDiscriminator, MLPDiscriminator, MLPGenerator, VirtualBatchNormGenerator
from repro.nets.minibatch import MinibatchDiscrimination, minibatch_features
from repro.nets.vbn import VirtualBatchNorm


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ----------------------------------------------------------------- one-sided label smoothing (Sec. 3.4)
@pytest.mark.parametrize("loss", ["minimax", "nonsaturating"])
@pytest.mark.parametrize("alpha", [0.9, 0.75])
def test_label_smoothing_loss_at_d_equal_alpha(loss, alpha):
    """With D(x) = alpha on real data the real term is the binary entropy H(alpha) and is minimal there
    (zero gradient); fakes keep target 0."""
    o = objective(loss, real_label=alpha)
    real = torch.full((3,), logit(alpha), dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    loss_value = o.d_loss(real, fake)
    entropy = -(alpha * math.log(alpha) + (1 - alpha) * math.log(1 - alpha))
    fake_term = sum(math.log(1 + math.exp(f)) for f in fake.tolist()) / 2  # -log(1 - sigmoid(f))
    assert loss_value.item() == pytest.approx(entropy + fake_term, rel=1e-12)
    loss_value.backward()
    assert real.grad.abs().max().item() < 1e-12
    # the unsmoothed loss is not minimal at alpha: its gradient pushes D(x) up
    plain = torch.full((3,), logit(alpha), dtype=torch.float64, requires_grad=True)
    objective(loss).d_loss(plain, fake).backward()
    assert (plain.grad < -1e-3).all()


def test_label_smoothing_keeps_fake_target_and_default():
    real, fake = torch.tensor([0.3, -2.0]), torch.tensor([1.0, -0.5])
    smoothed, plain = objective("nonsaturating", real_label=0.9), objective("nonsaturating")
    # fakes: identical term (target 0) -> the difference is the real term only, (1 - alpha) * E[D(x)]
    diff = smoothed.d_loss(real, fake) - plain.d_loss(real, fake)
    assert diff.item() == pytest.approx(0.1 * real.mean().item(), rel=1e-5)
    assert smoothed.g_loss(fake).item() == plain.g_loss(fake).item()  # G's loss is unchanged


@pytest.mark.parametrize("alpha", [0.0, 1.5, -0.1])
def test_label_smoothing_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="real_label"):
        objective("nonsaturating", real_label=alpha)


# ----------------------------------------------------------------- minibatch discrimination (Sec. 3.2)
def test_minibatch_features_of_identical_rows_count_the_others():
    """Identical rows: every ||M_i,b - M_j,b||_1 = 0, so o(x_i)_b = n - 1 (the j != i terms)."""
    m = torch.randn(1, 7, 5).expand(6, 7, 5)
    assert torch.equal(minibatch_features(m), torch.full((6, 7), 5.0))


def test_minibatch_features_by_hand():
    """n = 3, A = 2, B = 2 kernels of C = 1: M_i = f(x_i) T with T set by hand."""
    layer = MinibatchDiscrimination(2, kernels=2, kernel_dim=1)
    with torch.no_grad():
        layer.T.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # kernel 0: f_0; kernel 1: f_0 + f_1
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    m0, m1 = [0.0, 1.0, 0.0], [0.0, 1.0, 3.0]
    expect = [[sum(math.exp(-abs(m[i] - m[j])) for j in range(3) if j != i) for m in (m0, m1)] for i in range(3)]
    assert torch.allclose(layer(f), torch.tensor(expect), rtol=1e-6)


def explicit_minibatch_features(m: torch.Tensor) -> torch.Tensor:
    """The paper's formula over the explicit (n, n, B, C) differences (j = i adds exp(0) = 1)."""
    return torch.exp(-(m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)).sum(dim=1) - 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10])
@pytest.mark.parametrize("chunk_elements", [1, 40, 1 << 18])  # one kernel per pass, a few (with a rest), all
def test_minibatch_features_match_the_pairwise_formula_with_its_gradient(n, chunk_elements, monkeypatch):
    """The pair-once, chunked path equals the explicit (n, n, B, C) formula in float64, values and gradients,
    for odd and even n (the offset n / 2 pairs) and any chunking of the kernels."""
    monkeypatch.setattr("repro.nets.minibatch._CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(n)
    m = torch.randn(n, 9, 3, dtype=torch.float64, requires_grad=True)
    explicit = explicit_minibatch_features(m)
    assert torch.allclose(minibatch_features(m), explicit, rtol=1e-10, atol=1e-300)
    weights = torch.randn(n, 9, dtype=torch.float64)
    (mine,), (theirs,) = (torch.autograd.grad((out * weights).sum(), m) for out in (minibatch_features(m), explicit))
    assert torch.allclose(mine, theirs, rtol=1e-10, atol=1e-13)


def test_minibatch_features_gradcheck_and_double_backward():
    """First derivatives by finite differences; second ones (create_graph, as a gradient penalty needs) too."""
    torch.manual_seed(0)
    m = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(minibatch_features, (m,))
    assert torch.autograd.gradgradcheck(minibatch_features, (m,))


def test_minibatch_features_gradient_of_tied_rows_is_zero_and_shape_is_checked():
    """|.| has subgradient 0 at 0, as autograd's abs: identical rows get no gradient (o is at its maximum)."""
    m = torch.randn(1, 7, 5).expand(6, 7, 5).clone().requires_grad_(True)
    minibatch_features(m).sum().backward()
    assert torch.equal(m.grad, torch.zeros_like(m))
    with pytest.raises(ValueError, match=r"\(n, B, C\)"):
        minibatch_features(torch.randn(6, 7))


def test_gradient_penalty_through_a_minibatch_discriminator(monkeypatch):
    """WGAN-GP's penalty (create_graph=True) through minibatch discrimination: its value and its gradient
    in D's weights equal those with the explicit formula in place of the fast one."""
    from repro.regularizers import GradientPenalty

    class Players:  # the two hooks GradientPenalty needs, for one plain D
        def __init__(self, d):
            self.discriminate = d

        def sample_noise(self, draw, n):
            return draw(n)

        def batch_mean(self, values):
            return values.mean()

    torch.manual_seed(0)
    d = MinibatchDiscriminator(MLPDiscriminator(width=8, depth=2), kernels=4, kernel_dim=3).double()
    real, fake = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    results = []
    for features in (minibatch_features, explicit_minibatch_features):
        monkeypatch.setattr("repro.nets.minibatch.minibatch_features", features)
        torch.manual_seed(1)  # the same interpolates
        penalty = GradientPenalty(10.0)(Players(d), real, fake)
        grads = torch.autograd.grad(penalty, list(d.parameters()), allow_unused=True, materialize_grads=True)
        results.append((penalty, grads))
    (mine, mine_grads), (theirs, their_grads) = results
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-10)
    for a, b in zip(mine_grads, their_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_minibatch_discriminator_concatenates_before_its_head():
    torch.manual_seed(0)
    inner = MLPDiscriminator(width=8, depth=2)
    d = MinibatchDiscriminator(inner, kernels=4, kernel_dim=3)
    x = torch.randn(5, 2)
    feats = d.features(x)
    assert feats.shape == (5, 8 + 4) and d.feature_dim == 12
    assert torch.equal(feats[:, :8], inner.features(x))
    assert torch.allclose(d(x), d.head(feats).squeeze(1))
    # a sample's output depends on the rest of its minibatch (which plain D's does not)
    assert not torch.allclose(d(x)[:2], d(x[:2]))
    with pytest.raises(ValueError, match="kernels"):
        MinibatchDiscriminator(MLPDiscriminator(width=8, depth=1), kernels=0)


# ----------------------------------------------------------------- virtual batch normalization (Sec. 3.5)
@pytest.mark.parametrize("shape", [(6, 4), (6, 3, 5, 5)])
def test_vbn_of_the_reference_batch_is_its_batch_norm(shape):
    """The reference batch is normalized with its own statistics: batch norm in training mode."""
    bn = torch.nn.BatchNorm1d(shape[1]) if len(shape) == 2 else torch.nn.BatchNorm2d(shape[1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    vbn = VirtualBatchNorm(bn)
    x = torch.randn(shape)
    vbn.recording = True
    out = vbn(x)
    expect = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    assert torch.allclose(out, expect, atol=1e-5)


def test_vbn_of_a_new_example_mixes_its_statistics_with_the_reference():
    """mu = 1/(B+1) x + B/(B+1) mu_ref and mu2 likewise (per feature), written out for one example."""
    vbn = VirtualBatchNorm(torch.nn.BatchNorm1d(2, affine=False))
    ref = torch.tensor([[1.0, -2.0], [3.0, 0.0], [2.0, 4.0]])  # B = 3
    vbn.recording = True
    vbn(ref)
    vbn.recording = False
    x = torch.tensor([[5.0, 1.0]])
    out = vbn(x)
    for k in range(2):
        col = ref[:, k].tolist()
        mu = x[0, k].item() / 4 + 3 / 4 * sum(col) / 3
        mu2 = x[0, k].item() ** 2 / 4 + 3 / 4 * sum(c * c for c in col) / 3
        assert out[0, k].item() == pytest.approx((x[0, k].item() - mu) / math.sqrt(mu2 - mu * mu + 1e-5), rel=1e-5)


def test_vbn_generator_examples_do_not_depend_on_each_other():
    """With BN a sample depends on its batch; with VBN only on itself and the fixed reference batch."""
    torch.manual_seed(0)
    g = VirtualBatchNormGenerator(MLPGenerator(width=16, depth=2), reference_size=8, seed=3)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules())
    z = torch.randn(5, 2)
    assert torch.allclose(g(z)[:2], g(z[:2]), atol=1e-6)
    assert "reference_z" in g.state_dict()  # the reference batch is saved in checkpoints
    again = VirtualBatchNormGenerator(MLPGenerator(width=16, depth=2), reference_size=8, seed=3)
    assert torch.equal(again.reference_z, g.reference_z)
    # gradients reach the BN scale through both the example's and the reference batch's statistics
    g(z).sum().backward()
    assert all(p.grad is not None for p in g.parameters())
    with pytest.raises(ValueError, match="no batch-norm"):
        VirtualBatchNormGenerator(MLPGenerator(width=8, depth=1, batch_norm=False))


# ----------------------------------------------------------------- historical averaging (Sec. 3.3)
class _Players(torch.nn.Module):
    """A two-parameter 'G' and a one-parameter 'D', enough for the regularizer's bookkeeping."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.nn.Linear(1, 1, bias=True)
        self.discriminator = torch.nn.Linear(1, 1, bias=False)


def test_historical_averaging_is_the_distance_to_the_mean_of_past_parameters():
    m, reg = _Players(), HistoricalAveraging(weight=0.5)
    x = torch.zeros(1)
    m.discriminator.requires_grad_(False)  # as in G's step: the player is G
    history = [(1.0, 2.0), (3.0, -2.0), (-1.0, 6.0)]
    for t, (w, b) in enumerate(history, start=1):
        with torch.no_grad():
            m.generator.weight.fill_(w)
            m.generator.bias.fill_(b)
        m.generator.zero_grad()
        value = reg(m, x, x)
        mean_w = sum(h[0] for h in history[:t]) / t
        mean_b = sum(h[1] for h in history[:t]) / t
        assert value.item() == pytest.approx(0.5 * ((w - mean_w) ** 2 + (b - mean_b) ** 2), rel=1e-6)
        value.backward()  # d/dtheta = 2 * weight * (theta - mean), the mean held fixed
        assert m.generator.weight.grad.item() == pytest.approx(w - mean_w, abs=1e-6)
    assert reg.player == "generator" and int(reg.count) == 3
    assert reg(m, x, x).item() > 0  # t = 4 at (-1, 6): still away from the mean


def test_historical_averaging_state_is_checkpointed_and_player_fixed():
    m, reg = _Players(), HistoricalAveraging()
    reg(m, torch.zeros(1), torch.zeros(1))  # D trainable: the player is D
    assert reg.player == "discriminator" and reg.average.numel() == 1
    fresh = HistoricalAveraging()
    fresh.load_state_dict(reg.state_dict())  # the buffer is resized to the saved parameter count
    assert torch.equal(fresh.average, reg.average) and int(fresh.count) == 1
    m.discriminator.requires_grad_(False)
    with pytest.raises(ValueError, match="both players"):
        reg(m, torch.zeros(1), torch.zeros(1))


def test_minibatch_real_and_fake_batches_go_through_d_separately():
    """D's loss on [real; fake] equals the loss on D(real) and D(fake) computed as two minibatches."""
    from repro.variants import NSGAN

    torch.manual_seed(0)
    d = MinibatchDiscriminator(MLPDiscriminator(width=8, depth=1), kernels=4, kernel_dim=2)
    model = NSGAN(MLPGenerator(width=8, depth=1), d)
    real, fake = torch.randn(6, 2), torch.randn(6, 2) + 3
    separate = model.objective.d_loss(d(real), d(fake))
    joint = d(torch.cat([real, fake]))  # what one minibatch of both would give instead
    assert model.discriminator_loss(real, fake).item() == pytest.approx(separate.item(), rel=1e-6)
    assert model.objective.d_loss(joint[:6], joint[6:]).item() != pytest.approx(separate.item(), rel=1e-3)


def test_seed_ensembles_refuse_what_they_cannot_split_by_member():
    """Minibatch discrimination would compare members' samples with each other, historical averaging's state
    is per run: ``repro fit --ensemble K`` refuses both with one clear error (label smoothing is supported)."""
    from repro.ensemble.layers import EnsembleError
    from repro.ensemble.module import check_supported
    from repro.variants import NSGAN

    def model(**kwargs):
        return NSGAN(MLPGenerator(width=8, depth=1), kwargs.pop("d", MLPDiscriminator(width=8, depth=1)), **kwargs)

    check_supported(model(loss_args={"real_label": 0.9}))
    with pytest.raises(EnsembleError, match="compares the samples of a batch"):
        check_supported(model(d=MinibatchDiscriminator(MLPDiscriminator(width=8, depth=1), kernels=4)))
    with pytest.raises(EnsembleError, match="HistoricalAveraging"):
        check_supported(model(g_regularizers=[HistoricalAveraging()]))

"""BigGAN-lite (Brock et al. 2019): the modified orthogonal regulariser and its gradient, truncated latents,
the EMA start step, hierarchical latents with the shared class embedding, the truncation sweep's columns."""
from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from repro.latents import truncated_normal, truncation_suffix
from repro.metrics.registry import family_of_key
from repro.nets import BigGANGenerator, ProjectionDiscriminator, StandardCNNDiscriminator
from repro.nets.conditional_bn import ConditionalBatchNorm2d
from repro.regularizers import ModifiedOrthogonalRegularizer
from repro.variants import BigGAN


def _off_diagonal_squares(w: torch.Tensor) -> float:
    """sum_{i != j} <w_i, w_j>^2 over the rows of w (flattened), in float64 loops."""
    rows = w.detach().double().flatten(1)
    return sum(float(rows[i] @ rows[j]) ** 2 for i in range(len(rows)) for j in range(len(rows)) if i != j)


def _closed_form_gradient(w: torch.Tensor, beta: float) -> torch.Tensor:
    """d/dW beta ||W W^T * (1 - I)||_F^2 = 4 beta (W W^T * (1 - I)) W, row by row without autograd:
    row k gets 4 beta sum_{j != k} <w_k, w_j> w_j."""
    rows = w.detach().double().flatten(1)
    grad = torch.zeros_like(rows)
    for k in range(len(rows)):
        for j in range(len(rows)):
            if j != k:
                grad[k] += 4 * beta * float(rows[k] @ rows[j]) * rows[j]
    return grad.view(w.shape)


def test_ortho_penalty_is_zero_for_orthogonal_rows_of_any_norm():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    rows = q[:4] * torch.tensor([[0.5], [2.0], [3.0], [1.0]], dtype=torch.float64)  # orthogonal, not unit norm
    assert ModifiedOrthogonalRegularizer.penalty(rows).item() == pytest.approx(0.0, abs=1e-24)
    # the plain orthonormal term would not be zero here: only the off-diagonal of W W^T is penalized
    assert (rows @ rows.t() - torch.eye(4, dtype=torch.float64)).square().sum() > 1


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3)])
def test_ortho_penalty_and_gradient_match_the_formulas(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    beta = 1e-4
    value = beta * ModifiedOrthogonalRegularizer.penalty(w)
    assert value.item() == pytest.approx(beta * _off_diagonal_squares(w), rel=1e-10)
    (grad,) = torch.autograd.grad(value, w)
    assert torch.allclose(grad, _closed_form_gradient(w, beta), rtol=1e-10, atol=1e-16)


def test_ortho_regularizer_sums_over_gs_weights_except_the_shared_embedding():
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2, num_classes=10, shared_dim=8)
    d = ProjectionDiscriminator(StandardCNNDiscriminator(image_size=28, channels=1, width=4), num_classes=10)
    model = BigGAN(g, d, ortho_weight=1e-4, num_classes=10)
    (reg,) = model.g_regularizers
    names = [n for n, p in g.named_parameters() if p.dim() >= 2 and not n.startswith("shared.")]
    assert not any(w is g.shared.weight for w in reg.weights(g)) and len(reg.weights(g)) == len(names) > 10
    # raw (not spectrally normalized) weights: the parametrization's original tensor
    assert any(w is g.linear.parametrizations.weight.original for w in reg.weights(g))
    expected = 1e-4 * sum(_off_diagonal_squares(p) for n, p in g.named_parameters() if n in names)
    assert reg(model, torch.randn(2, 96), torch.randn(2, 1, 28, 28)).item() == pytest.approx(expected, rel=1e-5)
    assert BigGAN(g, d, num_classes=10).g_regularizers == []  # ortho_weight 0: off (BigGAN-PyTorch's CIFAR script)


def test_truncated_normal_never_exceeds_the_threshold_and_is_a_truncated_normal():
    gen = torch.Generator().manual_seed(0)
    for t in (0.25, 0.5, 1.0, 2.0):
        z = truncated_normal((4000, 8), t, generator=gen)
        assert z.abs().max() <= t and z.shape == (4000, 8)
    z = truncated_normal((20000,), 1.0, generator=torch.Generator().manual_seed(1)).double().numpy()
    assert stats.kstest(z, stats.truncnorm(-1.0, 1.0).cdf).pvalue > 0.01
    # the test can tell: a normal clipped to [-1, 1] (mass piled at the ends) is rejected
    clipped = torch.randn(20000, generator=torch.Generator().manual_seed(1)).clamp(-1, 1).double().numpy()
    assert stats.kstest(clipped, stats.truncnorm(-1.0, 1.0).cdf).pvalue < 1e-6
    with pytest.raises(ValueError, match="threshold must be > 0"):
        truncated_normal((2,), 0.0)


def test_model_draws_truncated_latents():
    model = _model()
    z = model.sample_z(512, truncation=0.3)
    assert z.shape == (512, model.z_dim) and z.abs().max() <= 0.3 and z.abs().max() > 0.25


def _model(**kwargs) -> BigGAN:
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2)
    return BigGAN(g, StandardCNNDiscriminator(image_size=28, channels=1, width=4), **kwargs)


def test_ema_copies_g_before_ema_start_then_averages(monkeypatch):
    model = _model(ema_decay=0.9, ema_start=3)
    for step in (1, 2, 3):
        monkeypatch.setattr(BigGAN, "global_step", property(lambda _, s=step: s))
        old = [p.clone() for p in model.generator_ema.parameters()]
        with torch.no_grad():
            for p in model.generator.parameters():
                p.add_(torch.randn_like(p))
        model.update_ema()
        for p_ema, p_old, p in zip(model.generator_ema.parameters(), old, model.generator.parameters()):
            if step < 3:  # BigGAN-PyTorch: decay 0 while itr < ema_start
                assert torch.equal(p_ema, p)
            else:
                assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p, atol=1e-6)
                assert not torch.equal(p_ema, p)
    with pytest.raises(ValueError, match="ema_start"):
        _model(ema_decay=0.9, ema_start=-1)


def test_hierarchical_latents_and_shared_embedding_reach_each_block():
    """z (96) is split into 3 chunks of 32: chunk 0 feeds the linear layer, chunk i the i-th up-block, whose
    two conditional BNs get c_i = [shared(y), z_i]; all blocks share one embedding table."""
    torch.manual_seed(0)
    g = BigGANGenerator(z_dim=96, image_size=28, channels=1, width=2, num_classes=10, shared_dim=8)
    seen: dict[str, torch.Tensor] = {}
    for name, m in g.named_modules():
        if isinstance(m, ConditionalBatchNorm2d):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[1]))
            assert m.gain.parametrizations.weight.original.shape == (8, 40)  # Linear(8 + 32 -> 8 channels)
    linear_in: list[torch.Tensor] = []
    g.linear.register_forward_hook(lambda mod, args, out: linear_in.append(args[0]))
    z, y = torch.randn(4, 96), torch.tensor([0, 3, 3, 9])
    assert g(z, y).shape == (4, 1, 28, 28)
    assert torch.equal(linear_in[0], z[:, :32])
    e = g.shared(y)
    for i in range(2):
        expected = torch.cat([e, z[:, 32 * (i + 1): 32 * (i + 2)]], 1)
        for bn in ("bn1", "bn2"):
            assert torch.equal(seen[f"blocks.{i}.{bn}"], expected), (i, bn)
    assert len(seen) == 4 and isinstance(g.shared, nn.Embedding)


def test_generator_refuses_bad_settings():
    with pytest.raises(ValueError, match="not a multiple of 3"):
        BigGANGenerator(z_dim=100, image_size=28, channels=1)
    with pytest.raises(ValueError, match="shared class embedding"):
        BigGANGenerator(num_classes=10, shared_dim=0, hierarchical=True)
    with pytest.raises(ValueError, match="needs num_classes"):
        BigGANGenerator(shared_dim=16)
    with pytest.raises(ValueError, match="image_size"):
        BigGANGenerator(image_size=64)
    g = BigGANGenerator(num_classes=10, shared_dim=0, hierarchical=False)
    with pytest.raises(ValueError, match="labels"):
        g(torch.randn(2, 128))


def test_truncated_metric_keys_belong_to_their_family():
    key = "fid10k_train_inception" + truncation_suffix(0.5)
    assert key == "fid10k_train_inception_trunc0.5" and truncation_suffix(1.0) == "_trunc1"
    assert family_of_key(key) is family_of_key("fid10k_train_inception") is not None
    assert family_of_key("modes_2500_trunc2").name == "toy_modes"

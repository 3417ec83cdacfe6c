"""The step's fast paths compute what they replace: fused Adam (the optimizer every variant builds) against an
float64 evaluation of Kingma & Ba's Alg. 1, and Maxout's ``max(dim).values`` against ``amax``, bit for bit
through training, with the one documented difference at exact ties."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from repro.nets import MaxoutDiscriminator, MLPGenerator, StandardCNNDiscriminator, StandardCNNGenerator
from repro.nets.metz import UnrolledDiscriminator, UnrolledGenerator
from repro.nets.mlp import Maxout
from repro.variants import NSGAN

LR, BETAS, EPS = 1e-4, (0.8, 0.999), 1e-8


def _adam_steps(fused: bool, p0: Tensor, grads: list[Tensor]) -> Tensor:
    p = p0.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=LR, betas=BETAS, fused=fused or None, foreach=False if not fused else None)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def _adam_formula(p0: Tensor, grads: list[Tensor]) -> Tensor:
    """Kingma & Ba 2015, Alg. 1 in float64: m, v moving averages, bias-corrected, eps added to sqrt(v_hat)."""
    (b1, b2), p = BETAS, p0.double()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g.double()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - LR * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + EPS)
    return p


def test_fused_adam_is_alg1_as_accurately_as_the_loop():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(100_003, generator=gen) * 0.02  # odd size: the fused kernel's vector body and its tail
    grads = [torch.randn(len(p0), generator=gen) * 10.0 ** torch.randint(-6, 1, p0.shape, generator=gen)
             for _ in range(5)]
    exact = _adam_formula(p0, grads)
    ulp = (torch.nextafter(exact.float(), torch.tensor(float("inf"))) - exact.float()).double().abs()
    errors = {}
    for fused in (False, True):
        err = (_adam_steps(fused, p0, grads).double() - exact).abs()
        assert (err <= ulp + 1e-4 * LR).all(), fused  # the last bit of each weight, plus float32 update rounding
        errors[fused] = (err / ulp).mean().item()
    assert errors[True] <= 1.05 * errors[False]
    assert not torch.equal(_adam_steps(True, p0, grads), _adam_steps(False, p0, grads))  # it is a different kernel


def test_variants_build_fused_adam_on_cpu():
    model = NSGAN(MLPGenerator(width=8, depth=1), MaxoutDiscriminator(width=4, depth=1, pieces=2))
    opt_g, opt_d = model.configure_optimizers()
    assert opt_g.param_groups[0]["fused"] and opt_d.param_groups[0]["fused"]
    rms = NSGAN(MLPGenerator(width=8, depth=1), MaxoutDiscriminator(width=4, depth=1, pieces=2), optimizer="rmsprop")
    assert isinstance(rms.configure_optimizers()[0], torch.optim.RMSprop)


def _amax_forward(self: Maxout, x: Tensor) -> Tensor:
    """Maxout as it was computed before (``amax``, whose backward splits ties evenly)."""
    return self.linear(x).view(len(x), self.width, self.pieces).amax(dim=2)


def _train_pacgan_d(steps: int, dtype: torch.dtype) -> list[Tensor]:
    """``steps`` simultaneous NS-GAN updates of PacGAN's code-protocol nets (G with BN, maxout D) on Gaussian data."""
    torch.manual_seed(0)
    g = MLPGenerator(width=64, depth=2, hidden_bias=False, bn_momentum=0.05).to(dtype)
    d = MaxoutDiscriminator(width=32, depth=3, pieces=5).to(dtype)
    opt_g, opt_d = (torch.optim.Adam(n.parameters(), lr=1e-3, betas=BETAS) for n in (g, d))
    for _ in range(steps):
        real, z = torch.randn(50, 2, dtype=dtype), torch.randn(50, 2, dtype=dtype)
        fake = g(z)
        d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return [p.detach().clone() for p in (*g.parameters(), *d.parameters())]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_maxout_trains_bit_identically_to_amax(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch):
    fast = _train_pacgan_d(20, dtype)
    monkeypatch.setattr(Maxout, "forward", _amax_forward)
    reference = _train_pacgan_d(20, dtype)
    assert all(torch.equal(a, b) for a, b in zip(fast, reference))


def test_maxout_values_and_gradients_equal_amax_and_ties_go_to_one_piece():
    torch.manual_seed(1)
    layer = Maxout(3, 4, 5).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(6, 4, dtype=torch.float64)
    grads = [torch.autograd.grad(f(layer, x), x, upstream)[0] for f in (Maxout.forward, _amax_forward)]
    assert torch.equal(layer(x), _amax_forward(layer, x)) and torch.equal(*grads)
    pieces = torch.zeros(1, 2, 3, dtype=torch.float64, requires_grad=True)  # every piece ties at 0
    (tied,) = torch.autograd.grad(pieces.max(dim=2).values, pieces, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    assert (tied != 0).sum(dim=2).tolist() == [[1, 1]] and tied.sum(dim=2).tolist() == [[1.0, 2.0]]
    assert torch.autograd.gradgradcheck(lambda v: v.max(dim=2).values, torch.randn(2, 3, 4, dtype=torch.float64,
                                                                                      requires_grad=True))


def _nets(kind: str) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, ...]]:
    """The MNIST tables' standard CNN (narrowed to width 4) or the stacked-MNIST table's Metz nets (D = 1/2 G)."""
    if kind == "cnn28":
        return (StandardCNNGenerator(z_dim=16, image_size=28, channels=1, width=4),
                StandardCNNDiscriminator(image_size=28, channels=1, width=4), (1, 28, 28))
    return UnrolledGenerator(z_dim=16), UnrolledDiscriminator(widths=(4, 8, 16)), (3, 28, 28)


def _step_grads(model: NSGAN, real: Tensor, z: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """D's gradients for its loss on ``real`` and G(z) (detached), then G's for its loss on G(z)."""
    fake = model.generator(z)
    model.discriminator_loss(real, fake.detach()).backward()
    d_grads = [p.grad.clone() for p in model.discriminator.parameters()]
    model.generator_loss(real, z, fake).backward()
    return d_grads, [p.grad.clone() for p in model.generator.parameters()]


@pytest.mark.parametrize("kind", ["cnn28", "metz"])
def test_channels_last_is_the_same_math(kind: str):
    """``channels_last: true`` stores 4-D weights in NHWC and changes only rounding. In float64 (where rounding
    cannot flip a ReLU's mask) one D and one G step's gradients equal the contiguous model's to 1e-12; in float32
    (oneDNN's kernels) D's and G's outputs agree to 1e-5 (the NHWC batch norm rounds 5-10x coarser than NCHW's,
    and through a ReLU a rounding-level flip of one unit's sign changes its gradient, so float32 gradients are
    not compared element-wise). A state dict loaded into a channels-last model keeps its layout (resumes)."""
    torch.manual_seed(0)
    g, d, shape = _nets(kind)
    state = NSGAN(g, d).state_dict()
    gen = torch.Generator().manual_seed(1)
    real, z = torch.rand(32, *shape, generator=gen) * 2 - 1, torch.randn(32, 16, generator=gen)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        plain, nhwc = (NSGAN(*_nets(kind)[:2], channels_last=cl) for cl in (False, True))
        for m in (plain, nhwc):
            m.load_state_dict(state)
            m.to(dtype)
        four_d = [p for p in nhwc.parameters() if p.dim() == 4]
        assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
        assert any(not p.is_contiguous() for p in four_d)
        x, w = real.to(dtype), z.to(dtype)
        for a, b in ((plain.generator(w), nhwc.generator(w)), (plain.discriminator(x), nhwc.discriminator(x))):
            assert (a - b).abs().max() <= tol * a.abs().max()
        if dtype == torch.float64:
            for player in (0, 1):  # D, G
                for a, b in zip(_step_grads(plain, x, w)[player], _step_grads(nhwc, x, w)[player]):
                    assert (a - b).abs().max() <= tol * max(a.abs().max().item(), 1e-3), tuple(a.shape)


def test_a_cpu_run_does_not_load_nvml_every_step(run_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Lightning's NVML-based CUDA check would load NVML at every Adam step of a CPU run; after
    ``probe_cuda_once`` (on building the run) the NVML probes do not grow with the run's length."""
    if torch.cuda.device_count():
        pytest.skip("a GPU is visible: the check is not changed there")
    from repro.fit import run_fit

    calls: list[int] = []
    nvml = torch.cuda._device_count_nvml
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: calls.append(1) or nvml())

    def probes(steps: int) -> int:
        monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as `import lightning` leaves it
        calls.clear()
        run_fit(["--config", "configs/ring8/nsgan.yaml", "--trainer.max_steps", str(steps), "--trainer.logger",
                 "false", "--trainer.enable_progress_bar", "false", "--samples.every_n_steps", "0"])
        return len(calls)

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    torch.cuda.is_available()
    assert calls == [1]  # the per-call probe this avoids
    assert probes(5) == probes(25)  # without it: 40 more, one per Adam step

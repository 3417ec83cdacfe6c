"""Singular-value spectra of D's layers and the generator's Jacobian conditioning, and their callbacks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from repro.fit import REPO_ROOT, ReproCLI
from repro.metrics.conditioning import condition_numbers, generator_jacobian, log_condition_stats
from repro.metrics.spectra import layer_spectra, normalized_spectrum
from repro.normalization import spectral_norm


def _matrix_with_singular_values(rows: int, cols: int, s: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    k = len(s)
    return u[:, :k] @ torch.diag(s) @ v[:, :k].T


def test_spectra_of_layers_with_known_singular_values():
    s_lin = torch.tensor([5.0, 3.0, 2.0, 0.5, 0.1], dtype=torch.float64)
    s_conv = torch.linspace(4.0, 0.25, 6, dtype=torch.float64)
    lin = nn.Linear(7, 5, dtype=torch.float64)
    conv = nn.Conv2d(2, 6, 3, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(_matrix_with_singular_values(5, 7, s_lin, 0))
        # SN-GAN reshape: a (out, in, kh, kw) kernel is the matrix (out, in*kh*kw)
        conv.weight.copy_(_matrix_with_singular_values(6, 18, s_conv, 1).view(6, 2, 3, 3))
    spectra = layer_spectra(nn.Sequential(conv, nn.Flatten(), lin))
    assert list(spectra) == ["0", "2"]
    torch.testing.assert_close(spectra["0"], s_conv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spectra["2"], s_lin, rtol=1e-12, atol=1e-12)
    norm = normalized_spectrum(spectra["2"])
    torch.testing.assert_close(norm, (s_lin / 5.0) ** 2)
    assert float(normalized_spectrum(spectra["2"], squared=False)[1]) == pytest.approx(0.6)


def test_spectra_read_spectral_norm_weight_without_a_power_iteration():
    layer = spectral_norm(nn.Linear(12, 8))
    layer.train()
    for _ in range(50):  # converge the stored u, v
        layer(torch.zeros(1, 12))
    u_before = layer.parametrizations.weight[0].u.clone()
    s = layer_spectra(nn.Sequential(layer))["0"]
    assert torch.equal(layer.parametrizations.weight[0].u, u_before)  # reading changed nothing
    assert layer.training  # and the mode is restored
    assert float(s[0]) == pytest.approx(1.0, abs=1e-4)  # W / sigma(W) has largest singular value 1


def test_condition_number_of_linear_generator_equals_cond_AtA():
    s = torch.tensor([8.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.4], dtype=torch.float64)
    a = _matrix_with_singular_values(40, 8, s, 2).float()

    class Linear(nn.Module):
        z_dim = 8

        def __init__(self):
            super().__init__()
            self.map = nn.Linear(8, 40, bias=False)
            with torch.no_grad():
                self.map.weight.copy_(a)

        def forward(self, z):
            return self.map(z).view(-1, 1, 5, 8)

    g = Linear()
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    jac = generator_jacobian(g, z)
    assert jac.shape == (6, 40, 8)
    torch.testing.assert_close(jac, a.expand(6, -1, -1))
    expected = np.linalg.cond(a.double().numpy().T @ a.double().numpy())
    cond = condition_numbers(jac)
    assert torch.allclose(cond, torch.full_like(cond, expected), rtol=1e-4)
    stats = log_condition_stats(g, z)
    assert stats["log_cond_mean"] == pytest.approx(np.log(expected), rel=1e-4) and stats["log_cond_std"] < 1e-4


def test_jacobian_of_nonlinear_generator_matches_autograd_both_modes():
    torch.manual_seed(4)
    for z_dim, out in ((3, 10), (10, 3)):  # forward mode (jacfwd) and reverse mode (jacrev)
        net = nn.Sequential(nn.Linear(z_dim, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, out))
        net.train()
        z = torch.randn(4, z_dim)
        jac = generator_jacobian(net, z)
        assert net.training  # restored after the eval-mode evaluation
        net.eval()
        for i in range(4):
            ref = torch.autograd.functional.jacobian(lambda x: net(x.unsqueeze(0)).flatten(), z[i])
            torch.testing.assert_close(jac[i], ref, rtol=1e-5, atol=1e-6)


def test_diagnostic_callbacks_through_the_cli(run_dir):
    cli = ReproCLI(args=[
        "--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"),
        "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.log_every_n_steps", "4",
        "--spectra.every_n_steps", "6", "--conditioning.every_n_steps", "6", "--conditioning.n_samples", "8",
    ])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    out = run_dir / "runs" / "lightning_logs" / "version_0"
    for name in ("step0000006.png", "final.png", "final.pt"):
        assert (out / "spectra" / name).stat().st_size > 500, name
    assert not (out / "spectra" / "step0000012.png").exists()  # the last step is written once, as final
    raw = torch.load(out / "spectra" / "final.pt", weights_only=True)
    assert len(raw) == 4 and all((v[:-1] >= v[1:]).all() for v in raw.values())  # 4 MLP layers, descending
    trace = json.loads((out / "conditioning" / "trace.json").read_text())
    assert [t["step"] for t in trace] == [0, 6, 12]
    assert all(np.isfinite(t["log_cond_mean"]) and t["log_cond_mean"] >= 0 for t in trace)
    assert (out / "conditioning" / "trace.png").stat().st_size > 1000
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "conditioning/log_cond_mean" in header and "spectra/discriminator" not in header
    assert any(h.startswith("spectra/") and h.endswith("sigma_max") for h in header.split(","))


def test_diagnostics_off_by_default_and_bad_interval_is_refused(run_dir):
    from repro.callbacks import ConditioningTrace, SpectraPlots

    with pytest.raises(ValueError, match="spectra.every_n_steps"):
        SpectraPlots(every_n_steps=-1)
    with pytest.raises(ValueError, match="conditioning.n_samples"):
        ConditioningTrace(every_n_steps=5, n_samples=0)
    cli = ReproCLI(args=["--config", str(REPO_ROOT / "configs/ring8/nsgan.yaml"), "--trainer.max_steps", "2",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    out = run_dir / "runs" / "lightning_logs" / "version_0"
    assert not (out / "spectra").exists() and not (out / "conditioning").exists()

"""What a paper's setup needs from YAML: per-net activation and initialization, the 2-D mixture
geometry, simultaneous and shared-latent updates. Each is set in a YAML and read back from the built module."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from repro import REPO_ROOT
from repro.fit import ReproCLI
from repro.data import GANDataModule
from repro.data.toy import TOY_SETS, Geometry
from repro.nets import (
    MaxoutDiscriminator, MLPDiscriminator, MLPGenerator, ResNetDiscriminator, ResNetGenerator,
    StandardCNNDiscriminator, StandardCNNGenerator,
)
from repro.nets.layers import Init, initialize
from repro.nets.metz import UnrolledDiscriminator, UnrolledGenerator
from repro.variants import NSGAN, WGANTS
from repro.variants.base import Fakes


def build(tmp_path: Path, override: str, base: str = "configs/ring8/nsgan.yaml") -> ReproCLI:
    """The module and data module a base config plus an override YAML build (nothing trains)."""
    path = tmp_path / "override.yaml"
    path.write_text(override)
    return ReproCLI(args=["--config", str(REPO_ROOT / base), "--config", str(path),
                          "--trainer.default_root_dir", str(tmp_path),
                          "--trainer.logger.init_args.save_dir", str(tmp_path)])


def kinds(net: nn.Module, types: tuple[type, ...]) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, types)]


ACTS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh)


def test_yaml_sets_each_nets_activation(run_dir):
    cli = build(run_dir, """
model:
  init_args:
    generator: {class_path: repro.nets.MLPGenerator, init_args: {activation: leaky_relu, slope: 0.3}}
    discriminator: {class_path: repro.nets.MLPDiscriminator, init_args: {activation: tanh}}
""")
    g_acts, d_acts = kinds(cli.model.generator, ACTS), kinds(cli.model.discriminator, ACTS)
    assert len(g_acts) == 3 and all(type(a) is nn.LeakyReLU and a.negative_slope == 0.3 for a in g_acts)
    assert len(d_acts) == 3 and all(type(a) is nn.Tanh for a in d_acts)


@pytest.mark.parametrize("name,kind", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("elu", nn.ELU),
                                       ("tanh", nn.Tanh)])
def test_every_net_takes_every_activation(name, kind):
    nets = [
        MLPGenerator(width=4, depth=1, activation=name), MLPDiscriminator(width=4, depth=1, activation=name),
        StandardCNNGenerator(z_dim=4, image_size=28, channels=1, width=2, activation=name),
        StandardCNNDiscriminator(image_size=28, channels=1, width=2, activation=name),
        UnrolledGenerator(z_dim=4, widths=(4, 4, 4, 4), activation=name),
        UnrolledDiscriminator(widths=(2, 2, 2), activation=name),
        ResNetGenerator(z_dim=4, width=0.02, activation=name), ResNetDiscriminator(width=0.02, activation=name),
    ]
    for net in nets:
        found = {type(a) for a in kinds(net, ACTS)}
        assert kind in found and not found - {kind, nn.Tanh}, net  # nn.Tanh: image generators' output layer
    with pytest.raises(ValueError, match="valid: relu, leaky_relu, elu, tanh"):
        MLPGenerator(activation="swish")


def test_yaml_sets_each_nets_initialization(run_dir):
    cli = build(run_dir, """
model:
  init_args:
    generator:
      class_path: repro.nets.MLPGenerator
      init_args: {init: {scheme: orthogonal, gain: 2.0, zero_bias: true}}
    discriminator:
      class_path: repro.nets.MLPDiscriminator
      init_args: {init: {scheme: normal, std: 0.05}}
""")
    g_layers = kinds(cli.model.generator, (nn.Linear,))
    for layer in g_layers:  # orthogonal with gain 2: the smaller Gram matrix is 4 I
        w = layer.weight
        gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
        assert torch.allclose(gram, 4.0 * torch.eye(len(gram)), atol=1e-4)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    hidden = kinds(cli.model.discriminator, (nn.Linear,))[1].weight  # 128 x 128 draws of N(0, 0.05^2)
    assert hidden.std().item() == pytest.approx(0.05, rel=0.05) and abs(hidden.mean().item()) < 0.005
    assert cli.model.discriminator.head.bias.abs().max() > 0  # zero_bias not asked for D


def test_xavier_and_parametrized_weights():
    torch.manual_seed(0)
    net = MLPDiscriminator(width=64, depth=2, norm="spectral", init=Init("xavier_uniform", gain=0.5))
    raw = net.body[3].parametrizations.weight.original  # initialized in the raw tensor
    bound = 0.5 * math.sqrt(6 / (64 + 64))  # Glorot & Bengio 2010, eq. 16, times the gain
    assert raw.abs().max() <= bound and raw.abs().max() > 0.9 * bound
    maxout = MaxoutDiscriminator(width=4, depth=1, init=Init("normal", std=1e-3, zero_bias=True))
    assert maxout.body[0].linear.weight.abs().max() < 1e-2 and not maxout.body[0].linear.bias.any()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.get_rng_state()
    initialize(net, Init())  # the default changes nothing and draws nothing
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="init.scheme"):
        Init("he")


def test_conv_truncation_truncates_only_the_convolutions():
    """conv_truncation 2 (DCGAN-tensorflow's conv2d): conv weights inside +-2 std, with the standard deviation of a
    normal truncated at 2 std, sqrt(1 - 2 * 2 phi(2) / (2 Phi(2) - 1)) std = 0.8796 std; the transposed convs and
    linears keep the plain normal (some draws beyond 2 std)."""
    torch.manual_seed(0)
    std = 0.02
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ConvTranspose2d(64, 64, 3), nn.Linear(256, 256))
    initialize(net, Init("normal", std=std, zero_bias=True, conv_truncation=2.0))
    phi2, mass = math.exp(-2.0) / math.sqrt(2 * math.pi), math.erf(2 / math.sqrt(2))
    conv, deconv, linear = (layer.weight for layer in net)
    assert conv.abs().max() <= 2 * std
    assert conv.std().item() == pytest.approx(std * math.sqrt(1 - 4 * phi2 / mass), rel=0.02)
    for w in (deconv, linear):
        assert w.abs().max() > 2 * std and w.std().item() == pytest.approx(std, rel=0.02)
    for bad in ({"scheme": "orthogonal", "conv_truncation": 2.0}, {"scheme": "normal", "conv_truncation": 0.0}):
        with pytest.raises(ValueError, match="conv_truncation"):
            Init(**bad)


def test_yaml_sets_the_mixture_geometry(run_dir):
    cli = build(run_dir, """
data:
  dataset: mixture
  num_samples: 1000
  mixture: {layout: ring, modes: 5, radius: 3.0, std: 0.1}
""")
    dm = cli.datamodule
    dm.setup()
    assert len(dm.mixture.centers) == 5 and dm.mixture.std == pytest.approx(0.1)
    assert torch.allclose(dm.mixture.centers.norm(dim=1), torch.full((5,), 3.0))
    assert (torch.cdist(dm.data, dm.mixture.centers).min(1).values < 0.6).all()  # 6 sigma
    grid = Geometry("grid", 9, 0.1, extent=3.0).mixture().centers  # extent and spacing are one choice
    assert torch.equal(grid, Geometry("grid", 9, 0.1, spacing=3.0).mixture().centers)
    assert sorted(set(grid[:, 0].tolist())) == [-3.0, 0.0, 3.0]


def test_named_sets_are_geometry_presets():
    """The presets give the published geometries, computed here another way."""
    angles = [2 * math.pi * k / 8 for k in range(8)]
    ring = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    grid = torch.tensor([[x, y] for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)])
    expected = {"ring8": (ring, 0.01), "grid25": (grid, 0.05), "wgangp-8gaussians": (2 * ring / 1.414, 0.02 / 1.414),
                "wgangp-25gaussians": (grid / 2.828, 0.05 / 2.828)}
    for name, (centers, std) in expected.items():
        mixture = TOY_SETS[name].mixture()
        assert torch.allclose(mixture.centers, centers, atol=1e-6) and mixture.std == pytest.approx(std), name


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "ring8", "mixture": Geometry("ring", 4, 0.1, radius=1.0)}, "data.dataset: mixture"),
    ({"dataset": "mixture"}, "data.dataset: mixture"),
])
def test_mixture_needs_its_dataset(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GANDataModule(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"layout": "grid", "modes": 8, "std": 0.1, "spacing": 1.0}, "k\\^2"),
    ({"layout": "grid", "modes": 9, "std": 0.1}, "exactly one of spacing and extent"),
    ({"layout": "ring", "modes": 8, "std": 0.1}, "radius"),
    ({"layout": "ring", "modes": 8, "std": 0.0, "radius": 1.0}, "std > 0"),
])
def test_bad_geometry_is_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Geometry(**kwargs)


def test_yaml_sets_simultaneous_updates(run_dir):
    cli = build(run_dir, "model:\n  init_args:\n    updates: simultaneous\n")
    assert cli.model.hparams.updates == "simultaneous"
    with pytest.raises(ValueError, match="n_dis: 1"):
        NSGAN(MLPGenerator(width=4, depth=1), MLPDiscriminator(width=4, depth=1), updates="simultaneous", n_dis=2)


def one_step(updates: str, lr_d: float) -> NSGAN:
    torch.manual_seed(0)
    model = NSGAN(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2), updates=updates, lr_d=lr_d)
    torch.manual_seed(1)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=GANDataModule("ring8", batch_size=32, num_samples=256))
    return model


def test_simultaneous_updates_take_both_gradients_before_either_step():
    """Simultaneous: G's update does not see D's (G is the same whatever D's learning rate), and D's
    update uses the same first fakes as the alternating loop's. Alternating: G sees the updated D."""
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # noqa: E731
    sim_slow, sim_fast = one_step("simultaneous", 1e-4), one_step("simultaneous", 0.5)
    alt_slow, alt_fast = one_step("alternating", 1e-4), one_step("alternating", 0.5)
    assert same(sim_slow.generator, sim_fast.generator)
    assert not same(alt_slow.generator, alt_fast.generator)
    assert same(sim_slow.discriminator, alt_slow.discriminator)
    assert not same(sim_slow.generator, alt_slow.generator)


class ReplayZ(NSGAN):
    """The alternating loop whose G step draws again the z of the last D step and recomputes G(z) on it:
    PacGAN's code (one z feed, two ``sess.run`` calls), written another way than ``updates: shared_z``."""

    def d_fakes(self, n: int) -> torch.Tensor:
        self.last_z = self.sample_z(n)
        with torch.no_grad():
            return self.generate(self.last_z)

    def draw_fakes(self, n: int) -> Fakes:
        return Fakes(self.last_z, self.generate(self.last_z), None)


def three_steps(cls: type[NSGAN], updates: str) -> NSGAN:
    torch.manual_seed(0)
    model = cls(MLPGenerator(width=16, depth=2, batch_norm=True), MLPDiscriminator(width=16, depth=2), n_dis=2,
                updates=updates)
    torch.manual_seed(1)
    L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=GANDataModule("ring8", batch_size=32, num_samples=256))
    return model


def test_shared_z_is_the_g_step_on_the_last_d_steps_latents():
    """shared_z (one G forward for the last D step and the G step) gives the weights of the loop that recomputes
    G on that D step's z; the default loop's fresh z gives other weights."""
    shared, replay, fresh = three_steps(NSGAN, "shared_z"), three_steps(ReplayZ, "alternating"), three_steps(NSGAN, "alternating")
    for net in ("generator", "discriminator"):
        for (name, a), b in zip(getattr(shared, net).named_parameters(), getattr(replay, net).parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{net}.{name}")
    assert not torch.allclose(shared.generator.net[0].weight, fresh.generator.net[0].weight)


@pytest.mark.parametrize("make, match", [
    (lambda: NSGAN(MLPGenerator(width=4, depth=1), MLPDiscriminator(width=4, depth=1), updates="shared_z",
                   g_batch_size=16), "g_batch_size: null"),
    (lambda: ReplayZ(MLPGenerator(width=4, depth=1), MLPDiscriminator(width=4, depth=1), updates="shared_z"),
     "ReplayZ replaces d_fakes"),
    (lambda: WGANTS(MLPGenerator(width=4, depth=1), MLPDiscriminator(width=4, depth=1), updates="shared_z"),
     "WGANTS replaces d_step"),
])
def test_shared_z_refuses_what_it_cannot_share(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_pacgan_code_nets_from_yaml(run_dir):
    """configs/nets/pacgan_code_*.yaml: hidden linears without bias, BN momentum 0.05, weights N(0, 0.02^2), biases 0."""
    nets = REPO_ROOT / "configs/nets"
    cli = build(run_dir, f"model:\n  init_args:\n    generator: {nets / 'pacgan_code_g.yaml'}\n"
                         f"    discriminator: {nets / 'pacgan_code_d.yaml'}\n")
    g, d = cli.model.generator, cli.model.discriminator
    linears = kinds(g, (nn.Linear,))
    assert [lin.bias is None for lin in linears] == [True] * 4 + [False]
    assert all(bn.momentum == 0.05 for bn in kinds(g, (nn.BatchNorm1d,)))
    weights = torch.cat([lin.weight.flatten() for lin in linears[1:4]])  # 480,000 draws of N(0, 0.02^2)
    assert abs(weights.std().item() - 0.02) < 2e-4 and abs(weights.mean().item()) < 2e-4
    d_linears = kinds(d, (nn.Linear,))
    assert len(d_linears) == 4 and all(torch.equal(lin.bias, torch.zeros_like(lin.bias)) for lin in d_linears)
    assert abs(torch.cat([lin.weight.flatten() for lin in d_linears]).std().item() - 0.02) < 3e-4

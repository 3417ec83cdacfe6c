"""The model half of the restructuring: one pixel map, one backward path, D frozen in one place, the
data module told its batches per step, and regularizers that need no variant."""
from __future__ import annotations

import ast
import re

import lightning as L
import pytest
import torch

from repro import REPO_ROOT
from repro.fit import ReproCLI
from repro.data import GANDataModule
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.nets.lens import MLPLens
from repro.pixels import to_float, to_uint8
from repro.variants import NSGAN, TAN

REPRO = REPO_ROOT / "repro"


def test_pixel_pair_round_trips_every_value():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = to_float(pixels)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(to_uint8(x), pixels)
    assert torch.equal(to_float(pixels.float()), x)  # resized (float) pixels take the same map
    assert torch.equal(to_uint8(torch.tensor([-2.0, 2.0])), torch.tensor([0, 255], dtype=torch.uint8))


def test_no_other_copy_of_the_pixel_map():
    hits = [p.relative_to(REPRO) for p in REPRO.rglob("*.py") if "127.5" in p.read_text() and p.name != "pixels.py"]
    assert not hits, hits


def test_data_module_is_told_its_batches_per_step(run_dir):
    assert "lightning_module" not in (REPRO / "data" / "module.py").read_text()
    dm = GANDataModule("ring8", batch_size=8, num_samples=256)
    dm.set_batches_per_step(5)
    assert len(next(iter(dm.train_dataloader()))) == 40
    with pytest.raises(ValueError, match=">= 1"):
        dm.set_batches_per_step(0)
    cli = ReproCLI(args=["--config", str(REPO_ROOT / "configs/ring8/wgangp.yaml"), "--trainer.max_steps", "1",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
                         "--data.num_samples", "640", "--data.batch_size", "16"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.datamodule.batches_per_step == cli.model.n_dis == 5


def test_regularizers_import_no_variant():
    tree = ast.parse((REPRO / "regularizers.py").read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and m.startswith("repro.variants")]


def test_frozen_discriminator_restores_each_flag():
    model = NSGAN(MLPGenerator(width=4, depth=1), MLPDiscriminator(width=4, depth=1))
    head = model.discriminator.head.weight
    head.requires_grad_(False)  # a parameter frozen on purpose stays frozen afterwards
    with model.frozen_discriminator():
        assert not any(p.requires_grad for p in model.discriminator.parameters())
    assert not head.requires_grad
    assert all(p.requires_grad for p in model.discriminator.parameters() if p is not head)


def test_every_backward_takes_the_one_path(monkeypatch):
    """TAN's lens update goes through ``manual_backward`` like D's and G's: on the lean path (no step
    hooks) none of the three reaches Lightning's wrapper."""
    calls = []
    monkeypatch.setattr(L.LightningModule, "manual_backward", lambda self, loss, *a, **k: calls.append(1))
    model = TAN(MLPGenerator(width=8, depth=1), MLPDiscriminator(width=8, depth=1), MLPLens(width=8, depth=1),
                temper_steps=10)
    lens_before = [p.clone() for p in model.lens.parameters()]
    L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=GANDataModule("ring8", batch_size=16, num_samples=128))
    assert model._lean_steps and not calls
    assert any(not torch.equal(a, b) for a, b in zip(lens_before, model.lens.parameters()))  # the lens did step


def test_base_reads_as_a_loop():
    """variants/base.py keeps the loop and its hooks; sync, RNG and EMA live in their own modules."""
    text = (REPRO / "variants" / "base.py").read_text()
    assert "all_reduce" not in text and "get_rng_state" not in text and "_foreach_lerp_" not in text
    assert "def frozen_discriminator" in text  # the freeze block, written once and used everywhere:
    for path in ("variants/base.py", "variants/tan.py", "bench/reference.py"):
        assert "discriminator.requires_grad_" not in (REPRO / path).read_text(), path


def test_readme_variant_table_names_every_registered_variant():
    """Every variant ``repro.variants.VARIANTS`` registers has its row in the README's variant table (`| name |`)."""
    from repro.variants import VARIANTS

    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("## Variants"):readme.index("Options that compose with any variant")]
    listed = {name for cell in re.findall(r"^\| ([a-z0-9_, ]+?)(?: \(config\))? \|", table, re.M)
              for name in cell.split(", ")}
    assert not set(VARIANTS) - listed, f"README's variant table lacks {sorted(set(VARIANTS) - listed)}"

"""The bench command end to end, the reference loop's exactness, the lean step path, and bf16-mixed."""
from __future__ import annotations

import json
import re

import lightning as L
import pytest
import torch
import yaml
from conftest import load_script

from repro import REPO_ROOT
from repro.bench import ReferenceLoop
from repro.bench.harness import PACGAN_CODE, STACKED_MNIST, WORKLOADS
from repro.cli import main
from repro.data import GANDataModule
from repro.nets import MLPDiscriminator, MLPGenerator
from repro.variants import GNGAN, NSGAN, SNGAN, WGAN, WGANGP


def tiny(cls: type, **kwargs: object) -> L.LightningModule:
    return cls(MLPGenerator(width=32, depth=2), MLPDiscriminator(width=32, depth=2), **kwargs)


def fit(model: L.LightningModule, steps: int, callbacks: list[L.Callback] = (), **trainer_kwargs: object) -> GANDataModule:
    dm = GANDataModule("ring8", batch_size=32, num_samples=1024)
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=list(callbacks), **trainer_kwargs,
    )
    trainer.fit(model, datamodule=dm)
    return dm


def test_bench_command_prints_ratios(run_dir, capsys):
    main(["bench", "--workloads", "mlp", "--variants", "nsgan", "--precisions", "32-true",
          "--warmup", "1", "--block", "2", "--rounds", "2", "--out", "bench"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| mlp | nsgan |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ms_repro, ms_ref, ratio = float(cells[2]), float(cells[3]), float(cells[4])
    assert ms_repro > 0 and ms_ref > 0
    assert ratio == pytest.approx(ratio)  # a number, not "n/a"
    assert 0.2 < ratio < 5.0
    record = json.loads((run_dir / "bench" / "results.json").read_text())
    assert record["machine"]["logical_cores"] >= 1 and record["machine"]["torch"] == torch.__version__
    (raw,) = record["raw"]
    assert len(raw["seconds"]["repro"]) == len(raw["seconds"]["ref-fp32"]) == 2
    assert raw["peak_mb"]["repro"] > 0 and raw["peak_mb"]["ref-fp32"] > 0
    assert re.search(r"\| mlp \| nsgan \|", (run_dir / "bench" / "table.md").read_text())


def _micro():
    return load_script("benchmarks/micro.py")


def test_extractor_micro_benchmark(run_dir, capsys):
    _micro().main(["extractor", "--extractor", "classifier", "--images", "600", "--out", "ext.json"])
    assert "images/s" in capsys.readouterr().out
    assert json.loads((run_dir / "ext.json").read_text())["extractor"]["images_per_s"] > 0


def test_d_step_costs_time_three_kinds():
    fp32, bf16 = _micro().d_step_costs(("32-true", "bf16-mixed"), block=1, rounds=2, batch=4, width=4)
    assert set(fp32["ms"]) == set(bf16["ms"]) == {"plain", "spectral", "gp"}
    assert fp32["vs_plain"]["plain"] == 1.0 and fp32["ms"]["gp"] > 0
    assert set(bf16["speedup_vs_fp32"]) == {"plain", "spectral", "gp"} and "speedup_vs_fp32" not in fp32


def test_bench_rejects_unknown_workload(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--workloads", "imagenet"])
    err = capsys.readouterr().err
    assert "--workloads" in err and "mlp, mnist, metz, cnn32" in err


@pytest.mark.parametrize("cls, kwargs", [(NSGAN, {"n_dis": 2, "lr_decay": "linear"}), (WGAN, {"n_dis": 2}),
                                         (WGANGP, {"n_dis": 2}), (NSGAN, {"updates": "simultaneous"}),
                                         (WGAN, {"n_dis": 2, "updates": "shared_z"})])
def test_reference_loop_is_the_same_math(cls, kwargs, run_dir):
    """From the same weights, data order and RNG state, repro and the bare loop end bit-identical."""
    model = tiny(cls, **kwargs)
    dm = GANDataModule("ring8", batch_size=32, num_samples=1024)
    dm.setup()
    ref = ReferenceLoop(model, dm.data, dm.batch_size, seed=dm.seed, max_steps=3)
    torch.manual_seed(7)
    fit(model, 3)
    torch.manual_seed(7)
    ref.run(3)
    for net in ("generator", "discriminator"):
        mine, theirs = getattr(model, net).state_dict(), getattr(ref.m, net).state_dict()
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), f"{net}.{k}"


class CountBackward(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.calls += 1


def test_lean_steps_only_when_no_hook_listens(run_dir):
    """Plain loss.backward()/optimizer.step() are used only when no callback implements a step hook;
    both paths give identical weights."""
    lean, hooked = tiny(NSGAN), tiny(NSGAN)
    hooked.load_state_dict(lean.state_dict())
    counter = CountBackward()
    torch.manual_seed(3)
    fit(lean, 3)
    torch.manual_seed(3)
    fit(hooked, 3, [counter])
    assert lean._lean_steps and not hooked._lean_steps
    assert counter.calls == 3 * 2  # one D and one G backward per iteration, all seen by the hook
    for k, v in lean.state_dict().items():
        assert torch.equal(v, hooked.state_dict()[k]), k


@pytest.mark.parametrize("cls", [WGANGP, GNGAN, SNGAN])
def test_bf16_mixed_double_backward(cls, run_dir):
    """bf16-mixed on CPU trains the double-backward variants (gradient penalty, gradient normalization)
    and spectral norm (whose sigma is computed in fp32 inside the autocast region)."""
    model = tiny(cls, n_dis=1) if cls is WGANGP else cls(MLPGenerator(width=32, depth=2), MLPDiscriminator(width=32, depth=2))
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    fit(model, 3, precision="bf16-mixed")
    assert all(torch.isfinite(v).all() for v in model._last.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # mixed: weights stay fp32


def test_compile_refused_with_double_backward(run_dir):
    with pytest.raises(ValueError, match="model.compile_nets: WGANGP differentiates D twice"):
        fit(tiny(WGANGP, compile_nets=True), 1)


def test_pacgan_workload_is_the_tables_protocol():
    """``repro bench --workloads pacgan`` and benchmarks/pacgan_step.py run what paper_tables/pacgan-2d-full.yaml runs."""
    spec = yaml.safe_load((REPO_ROOT / "paper_tables" / "pacgan-2d-full.yaml").read_text())["overrides"]
    pairs = dict(zip(PACGAN_CODE[::2], PACGAN_CODE[1::2]))
    assert set(pairs) == {f"--{k}" for k in spec} - {"--trainer.max_steps", "--samples.every_n_steps",
                                                     "--evaluation.curve_points", "--resumable.every_minutes",
                                                     "--evaluation.bn_standing_batches"}
    for key, value in pairs.items():
        want = spec[key[2:]]
        net = key.endswith(("generator", "discriminator"))  # absolute paths to the same files
        assert (value.endswith(want) if net else yaml.safe_load(value) == want), key
    script = load_script("benchmarks/pacgan_step.py")
    args = script.table_arguments(57)
    given = dict(zip(args[::2], args[1::2]))
    assert given["--config"] == "configs/ring8/nsgan.yaml" and given["--trainer.max_steps"] == "57"
    assert given["--model.init_args.updates"] == "simultaneous" and given["--data.batch_size"] == "100"


def test_metz_workload_drops_d_batch_norm_for_the_tables_rows_that_do():
    """The variants that refuse a batch-normed D (SN-GAN, GN-GAN, WGAN-GP) bench the stacked-MNIST table's rows of
    theirs, whose D has no batch norm; the others keep the nsgan-half row's D."""
    from repro.tables.spec import load_spec

    spec = load_spec(REPO_ROOT / "paper_tables" / "stacked-mnist.yaml")
    key = "model.init_args.discriminator.init_args.batch_norm"
    without_bn = {r.id.removesuffix("-half") for r in spec.rows if r.id.endswith("-half") and r.overrides.get(key) is False}
    overrides = WORKLOADS["metz"].variant_overrides
    assert without_bn == set(overrides) == {"sngan", "gngan", "wgangp"}
    assert all(dict(zip(o[::2], o[1::2])) == {f"--{key}": "false"} for o in overrides.values())


def test_metz_workload_is_the_stacked_mnist_tables_row():
    """``repro bench --workloads metz`` runs paper_tables/stacked-mnist.yaml's nsgan-half row (data, nets, optimizer,
    the table's shared_z loop)."""
    spec = yaml.safe_load((REPO_ROOT / "paper_tables" / "stacked-mnist.yaml").read_text())
    row = next(r for r in spec["rows"] if r["id"] == "nsgan-half")
    want = {**{k: v for k, v in spec["overrides"].items() if k.startswith(("data.", "model."))}, **row["overrides"]}
    given = dict(zip(STACKED_MNIST[::2], STACKED_MNIST[1::2]))
    assert WORKLOADS["metz"].folder == "mnist" and row["config"] == "configs/mnist/nsgan.yaml"
    for key, value in want.items():
        mine = given.get(f"--{key}")
        if key.endswith(("generator", "discriminator")):  # absolute paths to the same files
            assert mine is not None and mine.endswith(value), key
        elif mine is None:  # the row restates a value the config already has
            assert key == "model.init_args.lr_d" and value == 2.0e-4, key
        else:
            assert yaml.safe_load(mine) == value, key

"""Which digit a class-conditional MNIST generator draws for each class it is asked for: the confusion matrix behind
the per-class accuracy (`class_acc1k_classifier_cK`), from finished table runs' final states.

    python tools/class_confusion.py OUT_DIR RUN_DIR [RUN_DIR ...]

RUN_DIR: a finished run of a table (`results/<table>/<row>/seed<k>`) with its `config.yaml`, `metrics.json` and a
final state (`final_state/last.ckpt`, committed by specs that set `commit_final_states`; else `--checkpoint`). The
samples are the final evaluation's own (`repro.metrics.per_class.class_samples`: the same seeds, batches and MNIST
classifier; an EMA generator's batch-norm statistics re-estimated as its evaluation did), so row k of the matrix
over `evaluation.n_per_class` gives the record's accuracy of class k: the tool checks that, run by run. Where D
classifies too (AC-GAN's auxiliary head), the same samples also get D's own class (`d_counts`), and D's head its
accuracy per class on the real test digits (`d_real_accuracy`): whether G's off-class samples fool the classifier G
trains against. Writes OUT_DIR/confusion.json (per run: the matrices, the check, the checkpoint's SHA-256; the
command) and OUT_DIR/confusion.png (one panel per run: the share of class-k samples the classifier labels j), and
prints the cells off the diagonal above `--show` of a class.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from repro.console import quiet_library_noise
from repro.data.images import load_test_images
from repro.fit import build_cli
from repro.metrics.features import make_extractor
from repro.metrics.image import count_name
from repro.metrics.per_class import class_samples
from repro.metrics.registry import EvalContext, EvaluationSettings
from repro.pixels import to_float
from repro.record import read_json


def confusion(run: Path, checkpoint: Path) -> dict[str, Any]:
    """The run's class-confusion counts at ``checkpoint`` (rows: the class asked for; columns: the class the MNIST
    classifier gives), and each class's accuracy against its record's."""
    record = read_json(run / "metrics.json") or {}
    if record.get("status") != "finished":
        raise SystemExit(f"{run}: no finished record (metrics.json); run the table first")
    cli = build_cli(["--config", str(run / "config.yaml"), "--trainer.logger", "false", "--ckpt_path", "null",
                     "--resumable.dirpath", "null"])
    module = cli.model
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    if getattr(module, "num_classes", None) is None:
        raise SystemExit(f"{run}: not a class-conditional model (model.num_classes is unset)")
    evaluation = cli.config["evaluation"]
    settings = EvaluationSettings(n_per_class=evaluation["n_per_class"], batch_size=evaluation["batch_size"],
                                  seed=evaluation["seed"])
    drawn: list[torch.Tensor] = []  # the samples of the class being scored, for D's class head too
    ctx = EvalContext(lambda n, y: _kept(module.sample(n, y=y), drawn), None, module.device,
                      record.get("weights", "final"), settings, num_classes=module.num_classes)
    extractor = make_extractor("classifier", evaluation.get("extractor_weights"))
    counts, d_counts = [], []
    for k in range(module.num_classes):
        drawn.clear()
        counts.append(torch.bincount(class_samples(ctx, extractor, k)[1], minlength=module.num_classes).tolist())
        if _has_class_head(module):
            d_counts.append(torch.bincount(_d_classes(module, torch.cat(drawn)), minlength=module.num_classes).tolist())
    n = settings.n_per_class
    recorded = [record["metrics"].get(f"class_acc{count_name(n)}_classifier_c{k}") for k in range(module.num_classes)]
    return {"run": run.as_posix(), "checkpoint": checkpoint.as_posix(),
            "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(), "generator_steps": record["generator_steps"],
            "n_per_class": n, "counts": counts,
            "accuracy": [row[k] / n for k, row in enumerate(counts)], "recorded_accuracy": recorded,
            "matches_record": all(r is not None and abs(row[k] / n - r) < 1e-12
                                  for k, (row, r) in enumerate(zip(counts, recorded))),
            **(_d_report(module, cli.datamodule, d_counts) if d_counts else {})}


def _kept(images: torch.Tensor, drawn: list[torch.Tensor]) -> torch.Tensor:
    """``images``, also appended to ``drawn`` (the samples the evaluation scores, for D to classify too)."""
    drawn.append(images)
    return images


def _has_class_head(module: Any) -> bool:
    """Whether D classifies its input as well (AC-GAN's auxiliary classifier)."""
    return hasattr(module.discriminator, "source_and_classes")


@torch.inference_mode()
def _d_classes(module: Any, images: torch.Tensor) -> torch.Tensor:
    """The class D's auxiliary head gives each of ``images`` (model space), in eval mode, batch by batch."""
    d = module.discriminator.eval()
    return torch.cat([d.source_and_classes(x)[1].argmax(1) for x in images.split(500)])


def _d_report(module: Any, datamodule: Any, d_counts: list[list[int]]) -> dict[str, Any]:
    """D's own class head on the same fakes (``d_counts``, rows as ``counts``) and its accuracy per class on the
    real test digits: whether D's classes agree with the MNIST classifier's on reals and on G's samples."""
    images, labels = load_test_images(datamodule.dataset, datamodule.data_root, datamodule.download)
    predicted = _d_classes(module, to_float(images))
    real = [float((predicted[labels == k] == k).double().mean()) for k in range(module.num_classes)]
    return {"d_counts": d_counts, "d_real_accuracy": real}


def draw(results: list[dict[str, Any]], out: Path) -> None:
    """One heatmap per run: the share of class-k samples (rows) the classifier labels j (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    for ax, result in zip(axes.flat, results):
        share = torch.tensor(result["counts"], dtype=torch.float64) / result["n_per_class"]
        ax.imshow(share.numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title("/".join(Path(result["run"]).parts[-3:]), fontsize=8)
        ax.set_xlabel("classifier's label", fontsize=7)
        ax.set_ylabel("class asked for", fontsize=7)
        ax.set_xticks(range(len(share)))
        ax.set_yticks(range(len(share)))
        ax.tick_params(labelsize=6)
    fig.suptitle("class-conditional samples: share of class-k samples labelled j (MNIST classifier)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--checkpoint", default="final_state/last.ckpt", help="the state to sample, in each RUN_DIR")
    parser.add_argument("--show", type=float, default=0.1, help="print off-diagonal shares above this")
    args = parser.parse_args(argv)
    quiet_library_noise(banners=True)  # one model build per run: no per-build banners
    missing = [run / args.checkpoint for run in args.runs if not (run / args.checkpoint).is_file()]
    if missing:
        parser.error(f"no checkpoint at {', '.join(map(str, missing))} (--checkpoint names it inside each RUN_DIR)")
    results = [confusion(run, run / args.checkpoint) for run in args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python tools/class_confusion.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    (args.out / "confusion.json").write_text(json.dumps({"command": command, "results": results}, indent=1) + "\n")
    draw(results, args.out / "confusion.png")
    for r in results:
        n = r["n_per_class"]
        swaps = [f"{k} → {j}: {c / n:.0%}" for k, row in enumerate(r["counts"]) for j, c in enumerate(row)
                 if j != k and c / n > args.show]
        check = "equals the record" if r["matches_record"] else "DIFFERS from the record"
        print(f"{r['run']} at {r['generator_steps']:,}: accuracy {sum(r['accuracy']) / len(r['accuracy']):.3f} "
              f"({check}); drawn as another class: {'; '.join(swaps) or 'none'}")
        if "d_counts" in r:
            agree = [row[k] / n for k, row in enumerate(r["d_counts"])]
            print(f"  D's class head: the class asked for on {sum(agree) / len(agree):.3f} of these samples "
                  f"(per class {', '.join(f'{a:.2f}' for a in agree)}); on real test digits "
                  f"{sum(r['d_real_accuracy']) / len(r['d_real_accuracy']):.3f}")


if __name__ == "__main__":
    main()

"""Does bf16-mixed keep quality? Train one ring8 config at fp32 and at bf16-mixed over several seeds
(each a separate `repro fit` process, one thread) and compare the final mode metrics' seed spread.

Usage: python benchmarks/bf16_quality.py OUT_DIR [config] [steps] [seeds] [extra `repro fit` arguments...]
Writes OUT_DIR/<precision>/seed<k>/.../metrics.json and OUT_DIR/summary.md.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PRECISIONS = ("32-true", "bf16-mixed")


def run(out: Path, config: str, steps: int, seed: int, precision: str, extra: tuple[str, ...]) -> dict[str, float]:
    """One `repro fit` run; returns its final metrics."""
    save = out / precision / f"seed{seed}"
    cmd = [
        sys.executable, "-m", "repro", "fit", "--config", config, "--seed_everything", str(seed),
        "--trainer.precision", precision, "--trainer.max_steps", str(steps),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.logger.init_args.save_dir", str(save), "--samples.every_n_steps", "0", *extra,
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    (path,) = save.rglob("metrics.json")
    return json.loads(path.read_text())["metrics"]


def main(
    out_dir: str, config: str = "configs/ring8/nsgan.yaml", steps: int = 3000, seeds: int = 3, *extra: str
) -> None:
    out = Path(out_dir)
    values: dict[str, list[dict[str, float]]] = {p: [run(out, config, steps, s, p, extra) for s in range(seeds)] for p in PRECISIONS}
    names = list(values[PRECISIONS[0]][0])
    lines = [
        f"`{config}` {' '.join(extra)}, {steps} generator steps, seeds 0-{seeds - 1}: mean ± sd over seeds (per-seed values in brackets)",
        "",
        "| metric | " + " | ".join(PRECISIONS) + " |",
        "|---|" + "---|" * len(PRECISIONS),
    ]
    for name in names:
        cells = []
        for p in PRECISIONS:
            xs = [v[name] for v in values[p]]
            cells.append(f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f} [{', '.join(f'{x:.3f}' for x in xs)}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], *a[1:2], *(int(x) for x in a[2:4]), *a[4:])

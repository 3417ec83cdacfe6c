"""Logging intervals that scale with the run's length, so a short run and a long one both log enough points."""
from __future__ import annotations

import lightning as L

from repro.callbacks.conditioning import ConditioningTrace
from repro.callbacks.samples import SamplePlots
from repro.callbacks.spectra import SpectraPlots

__all__ = ["scale_intervals", "POINTS_PER_RUN"]

# how many times over a run each series is logged at most (intervals = max_steps // points)
POINTS_PER_RUN = {"losses": 100, "samples": 10, "spectra": 5, "conditioning": 10}


def _interval(configured: int | None, max_steps: int, points: int) -> int:
    """``configured`` made at most ``max_steps // points``, so a run logs ~``points`` times; None (off)
    becomes that interval, 0 (an explicit "only at the end") stays."""
    scaled = max(1, max_steps // points)
    return scaled if configured is None else min(configured, scaled) if configured > 0 else configured


def scale_intervals(trainer: L.Trainer, wandb_enabled: bool) -> None:
    """Loss logging every ``max_steps / 100`` generator updates at most (any run); with W&B also sample grids,
    spectra and the conditioning trace at intervals proportional to ``max_steps`` (turned on if off; an
    interval of 0, "only at the end", is kept)."""
    if not trainer.max_steps or trainer.max_steps < 1:
        return
    trainer.log_every_n_steps = _interval(trainer.log_every_n_steps, trainer.max_steps, POINTS_PER_RUN["losses"])
    if not wandb_enabled:
        return
    for cb in trainer.callbacks:
        for kind, key in ((SamplePlots, "samples"), (SpectraPlots, "spectra"), (ConditioningTrace, "conditioning")):
            if isinstance(cb, kind):
                cb.every_n_steps = _interval(cb.every_n_steps, trainer.max_steps, POINTS_PER_RUN[key])

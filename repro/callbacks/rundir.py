"""Where a run writes its files, without a collective call."""
from __future__ import annotations

from pathlib import Path

import lightning as L

__all__ = ["run_dir", "last_step"]


def run_dir(trainer: L.Trainer) -> Path:
    """``trainer.log_dir`` without its ``strategy.broadcast``: safe to call on rank 0 alone under DDP
    (``trainer.log_dir`` is a collective there, and one rank calling it hangs or kills the run)."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        path = getattr(logger, "log_dir", None) or logger.save_dir
        if path:
            return Path(path)
    return Path(trainer.default_root_dir)


def last_step(trainer: L.Trainer) -> bool:
    """Whether this generator update is the run's last (``max_steps`` reached): interval callbacks leave it to
    their end-of-training write, so nothing is written or logged twice at one step."""
    return 0 < trainer.max_steps <= trainer.global_step

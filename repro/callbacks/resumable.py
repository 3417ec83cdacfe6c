"""Resumable checkpoints of a long run: on a wall-clock interval and when the run is asked to stop.

A run killed by its session (SIGTERM, Ctrl-C) or by the machine (SIGKILL) loses at most ``every_minutes``
of training: ``repro fit ... --ckpt_path <dirpath>/last.ckpt`` (or ``repro reproduce``, which does it for
unfinished table runs) continues it bit-exactly (tests/test_resume.py). It is also written when the run
reaches ``max_steps``, before the final evaluation: a run that then fails at evaluation resumes from it with
nothing left to train and is only evaluated (``FinalEvaluation``). The file is written to a temporary
name and renamed, so a reader never sees half a checkpoint; ``progress.json`` beside it says how far it got.

Wall time across processes: the checkpoint and ``progress.json`` carry ``wall_seconds``, the wall time of every
process of the run so far, each counted from its start (``repro.record.process_seconds``): the total the resumed
checkpoint carried plus this process's time at the save. What a process spent after its last save (a killed one's
lost steps, its exit) is not counted, as ``train_seconds``, whose clock is also restored from the checkpoint, does
not count it. ``None``: unknown, for a run resumed from a checkpoint written before this count (and its successors).
The table runner adds the last process's own timing (``repro.tables.execute``).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from repro.callbacks.rundir import run_dir
from repro.record import CHECKPOINT_NAME, process_seconds, write_json_atomic

__all__ = ["ResumableCheckpoint", "CHECKPOINT_NAME"]


class ResumableCheckpoint(L.Callback):
    """Save ``<dirpath>/last.ckpt`` every ``every_minutes`` of wall time and on SIGTERM / SIGINT.

    Args:
        every_minutes: wall-clock interval between checkpoints (0 or less: only when stopped).
        dirpath: folder of the checkpoint (default: ``<run folder>/in_progress``).
        check_every_n_steps: under DDP, how often rank 0's clock is broadcast to the other ranks
            (one collective per this many steps); one process reads its clock every step (no device sync).
    """

    def __init__(self, every_minutes: float = 10.0, dirpath: str | None = None, check_every_n_steps: int = 50):
        if check_every_n_steps < 1:
            raise ValueError(f"resumable.check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.every_seconds = every_minutes * 60.0
        self.dirpath = dirpath
        self.check_every_n_steps = check_every_n_steps
        self._last_save = 0.0
        self._saved_step: int | None = None
        self._previous_sigint: Any = None
        self._wall_before: float | None = 0.0  # earlier processes' wall seconds (None: unknown)

    def state_dict(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._wall_before = state.get("wall_seconds")

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Before ``load_state_dict``, which sets it: a checkpoint without this callback's state (written before the
        wall count) leaves the earlier processes' wall time unknown."""
        self._wall_before = None

    def wall_seconds(self) -> float | None:
        """Wall seconds of the run's processes so far: the earlier ones' (to their last save) plus this one's."""
        return None if self._wall_before is None else self._wall_before + process_seconds()

    def directory(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else run_dir(trainer) / "in_progress"

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last_save = time.monotonic()
        if trainer.world_size == 1 and _in_main_thread():
            # Ctrl-C stops at the end of the current step (like SIGTERM) so the checkpoint is consistent
            self._previous_sigint = signal.signal(signal.SIGINT, lambda *_: _request_stop(trainer))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restore_sigint()

    def _due(self, trainer: L.Trainer) -> bool:
        if self.every_seconds <= 0:
            return False
        if trainer.world_size == 1:
            return time.monotonic() - self._last_save >= self.every_seconds
        if trainer.global_step % self.check_every_n_steps:
            return False
        return bool(trainer.strategy.broadcast(time.monotonic() - self._last_save >= self.every_seconds, src=0))

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        # asked to stop (one process): save here, where the periodic checkpoints are taken, not after Lightning
        # has closed the epoch (a checkpoint taken there resumes one epoch ahead in the logs' epoch count)
        stopping = trainer.world_size == 1 and trainer.received_sigterm
        if (stopping or self._due(trainer)) and trainer.global_step < (
                trainer.max_steps if trainer.max_steps > 0 else float("inf")):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """At ``max_steps``, before the end-of-training hooks (the final evaluation): the run's complete
        weights, so a run that fails at evaluation is re-evaluated from here, not retrained. Also when asked
        to stop during the epoch's last step (the state Lightning's own epoch-end checkpoints have)."""
        stopping = trainer.world_size == 1 and trainer.received_sigterm and self._saved_step != trainer.global_step
        if stopping or 0 < trainer.max_steps <= trainer.global_step:
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        """Lightning raises ``SIGTERMException`` at the end of a step after SIGTERM (or our SIGINT): state is
        consistent. Saved here only if the step's end did not save already (DDP; or a signal during Lightning's
        own epoch-end hooks, whose checkpoint resumes bit-exactly but counts the log's ``epoch`` one ahead)."""
        self._restore_sigint()
        if isinstance(exception, SIGTERMException) and 0 < trainer.global_step != self._saved_step:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint atomically (every rank takes part; rank 0 writes) and its ``progress.json``."""
        folder = self.directory(trainer)
        target = folder / CHECKPOINT_NAME
        tmp = folder / (CHECKPOINT_NAME + ".tmp")
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
        for logger in trainer.loggers:  # rows logged up to this step are on disk before the checkpoint exists
            logger.save()
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, target)
            write_json_atomic({"generator_steps": trainer.global_step, "max_steps": trainer.max_steps,
                               "wall_seconds": self.wall_seconds(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                              folder / "progress.json")
        self._last_save, self._saved_step = time.monotonic(), trainer.global_step
        return target

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and _in_main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


def _request_stop(trainer: L.Trainer) -> None:
    if trainer.received_sigterm:  # a second Ctrl-C: stop now, without a checkpoint
        raise KeyboardInterrupt
    trainer._signal_connector.received_sigterm = True


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

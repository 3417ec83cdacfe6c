"""``repro fit --ensemble K``: build K members, give each its run folder, loggers and callbacks.

Member k is the run ``repro fit ... --seed_everything s+k`` (s: this command's seed; or the k-th of
``ensemble.seeds``, which need not be consecutive): its model is
instantiated from the same config under that seed, exactly as that single run would build it; its
callbacks (samples, final evaluation, divergence stop, spectra, conditioning, ...) are the single run's
own instances and see a view of the trainer whose loggers and run folder are the member's, and the
member's model, whose tensors are views of its slice of the ensemble. So each member folder gets the
``metrics.json``, ``metrics.csv``, ``config.yaml`` (which re-runs that member alone) and figures a single
run writes. The ensemble's own folder (the configured logger's) holds its config and checkpoints.

A member that diverges is recorded as diverged by its own ``DivergenceStop`` and gets no further callbacks
(its numbers keep being computed, isolated from the other members); the fit fails only if all diverge.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, Logger

from repro.callbacks.divergence import TrainingDiverged
from repro.callbacks.resumable import ResumableCheckpoint
from repro.callbacks.rundir import run_dir
from repro.ensemble.layers import EnsembleError
from repro.ensemble.module import make_ensemble
from repro.loggers import with_loggers
from repro.variants import GANModule

__all__ = ["EnsembleOptions", "Member", "MemberCallbacks", "MemberTrainer", "build_ensemble"]

# callbacks of the process, not of a run: they stay on the ensemble's trainer and checkpoint the ensemble
ENSEMBLE_LEVEL: tuple[type[L.Callback], ...] = (ResumableCheckpoint,)
_CALLBACK_HOOKS = (
    "on_fit_start", "on_train_epoch_start", "on_train_batch_start", "on_train_epoch_end",
    "on_fit_end", "on_exception",
)


class EnsembleOptions:
    """Seed ensemble (config group ``ensemble``): train seeds s .. s+size-1 (s = ``seed_everything``), or the
    listed ``seeds``, of this config together in one process, each writing its own run folder as a single run would.

    Args:
        size: number of members K; null: one ordinary run (or as many as ``seeds`` lists).
        run_dirs: the members' run folders: a list of ``size`` folders, or one pattern containing
            ``{seed}``; default ``<this run's folder>/seed{seed}``.
        seeds: the members' seeds, any distinct integers (e.g. the unfinished seeds of a table row);
            default s .. s+size-1.
    """

    def __init__(self, size: int | None = None, run_dirs: str | list[str] | None = None,
                 seeds: list[int] | None = None):
        if seeds is not None:
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"ensemble.seeds must list distinct seeds, got {seeds}")
            if size is not None and size != len(seeds):
                raise ValueError(f"ensemble.seeds lists {len(seeds)} seeds for ensemble.size {size}")
            size = len(seeds)
        if size is not None and size < 1:
            raise ValueError(f"ensemble.size must be >= 1 or null, got {size}")
        if size is None and run_dirs is not None:
            raise ValueError("ensemble.run_dirs needs ensemble.size")
        if isinstance(run_dirs, str) and "{seed}" not in run_dirs:
            raise ValueError(f"ensemble.run_dirs: a single folder must be a pattern containing {{seed}}, got {run_dirs!r}")
        if isinstance(run_dirs, list):
            if len(run_dirs) != size:
                raise ValueError(f"ensemble.run_dirs lists {len(run_dirs)} folders for ensemble.size {size}")
            if len(set(map(str, run_dirs))) != len(run_dirs):
                raise ValueError("ensemble.run_dirs: every member needs its own folder")
        self.size, self.run_dirs, self.seeds = size, run_dirs, seeds

    def member_seeds(self, first: int) -> list[int]:
        """The members' seeds: ``seeds`` if given, else ``first`` .. ``first + size - 1``."""
        return list(self.seeds) if self.seeds is not None else list(range(first, first + (self.size or 0)))

    def folders(self, seeds: list[int], default_root: Path) -> list[Path]:
        """Member k's run folder."""
        if isinstance(self.run_dirs, list):
            return [Path(p) for p in self.run_dirs]
        pattern = self.run_dirs if self.run_dirs is not None else str(default_root / "seed{seed}")
        return [Path(pattern.format(seed=s)) for s in seeds]


@dataclass
class Member:
    """One member's run: its seed, model (a view of its slice after ``bind_members``), callbacks, loggers."""

    seed: int
    model: GANModule
    callbacks: list[L.Callback]
    loggers: list[Logger]
    folder: Path
    config_text: str
    alive: bool = True
    trainer: Any = field(default=None, repr=False)


class MemberTrainer:
    """The ensemble's trainer as member k's callbacks should see it: the member's loggers, folder, model."""

    def __init__(self, trainer: L.Trainer, member: Member):
        self._trainer, self._member = trainer, member

    @property
    def loggers(self) -> list[Logger]:
        return self._member.loggers

    @property
    def logger(self) -> Logger:
        return self._member.loggers[0]

    @property
    def log_dir(self) -> str:
        return str(self._member.folder)

    @property
    def default_root_dir(self) -> str:
        return str(self._member.folder)

    @property
    def lightning_module(self) -> GANModule:
        return self._member.model

    @property
    def callbacks(self) -> list[L.Callback]:
        return self._member.callbacks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)


class MemberCallbacks(L.Callback):
    """Forwards the trainer's callback hooks to every live member's own callbacks."""

    def __init__(self, members: list[Member]):
        self.members = members

    @property
    def state_key(self) -> str:
        return "MemberCallbacks"

    def _each(self, call: Callable[[Member], None]) -> None:
        for m in self.members:
            if not m.alive:
                continue
            try:
                call(m)
            except TrainingDiverged as err:
                m.alive = False
                print(f"ensemble member seed {m.seed}: {err}")
        if not any(m.alive for m in self.members):
            raise TrainingDiverged("every member of the ensemble diverged; each one's record says where")

    def _forward(self, hook: str, *args: Any) -> None:
        self._each(lambda m: [getattr(cb, hook)(m.trainer, m.model, *args) for cb in m.callbacks])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.member_loggers = [m.loggers for m in self.members]
        pl_module.member_rows = {}
        for m in self.members:
            m.trainer = MemberTrainer(trainer, m)
            m.model.trainer = m.trainer
            m.folder.mkdir(parents=True, exist_ok=True)
            (m.folder / "config.yaml").write_text(m.config_text)
        self._forward("setup", stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.bind_members()
        self._forward("on_train_start")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        last = pl_module._last
        for i, m in enumerate(self.members):
            m.model._last = {key: v[i] for key, v in last.items()}
            m.model._ema_version = pl_module._ema_version
        pl_module.flush_member_logs()
        self._forward("on_train_batch_end", outputs, batch, batch_idx)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._forward("on_train_end")
        for m in self.members:
            for logger in m.loggers:
                logger.finalize("success" if m.alive else "failed")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._forward("teardown", stage)
        for m in self.members:
            for logger in m.loggers:
                logger.save()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Every member's rows logged up to this step are on disk before a checkpoint of this step exists (as
        ``ResumableCheckpoint`` does for the trainer's own loggers): a run resumed from it logs only later steps."""
        pl_module.flush_member_logs()
        for m in self.members:
            for logger in m.loggers:
                logger.save()

    def state_dict(self) -> dict[str, Any]:
        return {"members": [{"seed": m.seed, "alive": m.alive, "callbacks": [cb.state_dict() for cb in m.callbacks]}
                            for m in self.members]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["members"]
        if [s["seed"] for s in saved] != [m.seed for m in self.members]:
            raise EnsembleError(f"ckpt_path: the checkpoint's members have seeds {[s['seed'] for s in saved]}, "
                                f"not {[m.seed for m in self.members]}")
        for m, s in zip(self.members, saved):
            m.alive = s["alive"]
            for cb, cb_state in zip(m.callbacks, s["callbacks"]):
                cb.load_state_dict(cb_state)


for _hook in _CALLBACK_HOOKS:
    assert _hook not in MemberCallbacks.__dict__, _hook

    def _forwarder(self: MemberCallbacks, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any,
                   _hook: str = _hook) -> None:
        self._forward(_hook, *args)
    setattr(MemberCallbacks, _hook, _forwarder)


def build_ensemble(cli: Any) -> None:
    """Replace ``cli.model`` by the ensemble of ``ensemble.size`` members and the member callbacks by one
    ``MemberCallbacks`` (called from ``ReproCLI.after_instantiate_classes`` when ``ensemble.size`` is set)."""
    options: EnsembleOptions = cli.config_init["ensemble"]
    trainer: L.Trainer = cli.trainer
    if trainer.num_devices != 1 or trainer.num_nodes != 1:
        raise EnsembleError("ensemble: a seed ensemble runs in one process on one device; set trainer.devices 1 "
                            "(spread members over devices as separate ensembles)")
    first = int(cli.config["seed_everything"])
    seeds = options.member_seeds(first)
    folders = options.folders(seeds, run_dir(trainer))
    parsed = [(key, value) for key, value in cli.config_init.items()
              if isinstance(value, L.Callback) and not isinstance(value, ENSEMBLE_LEVEL)]
    mine = {id(value) for _, value in parsed}
    members, rng_states = [], []
    for seed, folder in zip(seeds, folders):
        L.seed_everything(seed, verbose=False)
        init = cli.parser.instantiate_classes(cli.config)  # everything the single run builds, in its order
        rng_states.append(torch.get_rng_state())
        config = member_config(cli.config, seed, folder)
        loggers = with_loggers([CSVLogger(str(folder), name="", version="")], init.get("wandb"), init["model"],
                               cli.datamodule, config.as_dict())
        members.append(Member(seed, init["model"], [init[key] for key, _ in parsed], loggers, folder,
                              cli.parser.dump(config, skip_none=False)))
    L.seed_everything(first, verbose=False)
    cli.model = make_ensemble(cli.model, [m.model for m in members], seeds, rng_states)
    trainer.callbacks[:] = [cb for cb in trainer.callbacks if id(cb) not in mine] + [MemberCallbacks(members)]


def member_config(config: Any, seed: int, folder: Path) -> Any:
    """The config of the single run that member ``seed`` is: that seed, the member's folder, no ensemble."""
    config = copy.deepcopy(config)
    config["seed_everything"] = seed
    config["ensemble"]["size"], config["ensemble"]["run_dirs"], config["ensemble"]["seeds"] = None, None, None
    config["ckpt_path"] = None
    config["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(folder), "name": "", "version": ""}}
    return config

"""Files of unknown origin, read safely; and the checks a checkpoint passes before a run resumes from it.

- ``safe_load``: every checkpoint, cached feature tensor or cached autoencoder repro reads goes
  through ``torch.load(weights_only=True)``: tensors, plain containers, numbers and strings, plus the
  classes in ``SAFE_GLOBALS`` (none today: a repro checkpoint holds nothing else). A file whose
  unpickling would import anything else (a function such as ``os.system``, any other class) is refused
  with one line before any of it runs.
- ``ConfigStamp``: a callback that writes the run's ``model`` and ``data`` configuration into every
  checkpoint (``checkpoint["repro_config"]``), with the variant's class path and every nested
  argument (networks, regularizers), which Lightning's ``hyper_parameters`` omit.
- ``check_resume``: ``--ckpt_path`` must be a readable repro checkpoint whose weights fit the
  configured model and whose settings equal the configuration's. A changed setting is refused, with
  the keys named: the checkpoint's optimizer and scheduler states carry the old learning rates and
  betas (Lightning restores them over the new ones), so a change would either be silently ignored or
  make the first half of a run differ from the config it records. Only settings that change neither
  the model nor the batches (``RESUMABLE_CHANGES``) may differ, and a setting the checkpoint's code did
  not have yet may appear at its class's default (an argument added since, which keeps the old behaviour).
  The ``evaluation`` settings are compared too, where the checkpoint has them: its curve points were measured
  with them, and a resumed run measuring the rest otherwise would draw one curve from two protocols (when and in
  what chunks the points are evaluated may change).
"""
from __future__ import annotations

import importlib
import json
import pickle
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from repro.setting_defaults import UNKNOWN, setting_default

__all__ = ["SAFE_GLOBALS", "net_from_checkpoint", "RESUMABLE_CHANGES", "UnsafeFileError", "safe_load", "ConfigStamp", "check_resume",
           "config_differences"]

# Classes (never functions) a checkpoint may hold beyond what torch's weights-only unpickler allows.
SAFE_GLOBALS: list[type] = []
# Settings a resumed run may change: where data and caches live, and how the same nets are executed.
RESUMABLE_CHANGES = ("data.data_root", "data.download", "data.num_workers", "model.init_args.compile_nets",
                     "model.init_args.ae_cache_dir",
                     # when the curve is evaluated, and where and in what chunks: not what a point measures
                     "evaluation.curve_points", "evaluation.tail_points", "evaluation.batch_size",
                     "evaluation.cache_dir")
STAMPED = ("model", "data", "evaluation")  # evaluation: the curve points a checkpoint holds were measured with it
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class UnsafeFileError(ValueError):
    """A file that would import code when unpickled; it was not loaded."""


def safe_load(path: Path, key: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; ``key`` (the option or cache the file came from)
    starts the one-line ``ValueError`` raised for an unsafe, corrupt or truncated file."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED.search(str(err))
        if found:
            raise UnsafeFileError(
                f"{key}: {path} refused: loading it would import {found.group(1)}, which no repro file holds "
                "(a tampered or foreign file; nothing in it was run); use a file written by repro") from None
        raise ValueError(f"{key}: {path} is not a readable PyTorch file (corrupt or truncated?): "
                         f"{str(err).splitlines()[0]}") from None
    except Exception as err:  # torch raises RuntimeError / EOFError / OSError / ... for damaged files
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{key}: {path} is not a readable PyTorch file (corrupt or truncated?): "
                         f"{type(err).__name__}: {first}") from None


def _plain(value: Any) -> Any:
    """``value`` as JSON types (tuples become lists, paths strings): what a weights-only load gives back."""
    return json.loads(json.dumps(value, default=str))


class ConfigStamp(L.Callback):
    """Writes the run's ``model``, ``data`` and ``evaluation`` configuration into each checkpoint as
    ``repro_config`` (a checkpoint from before ``evaluation`` was stamped has only the first two)."""

    def __init__(self, config: dict[str, Any]):
        self.config = _plain({key: config.get(key) for key in STAMPED})

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["repro_config"] = self.config


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, checkpoint's value, configured value) for every setting that differs, except
    ``RESUMABLE_CHANGES``."""
    a, b = _flatten(_plain(saved)), _flatten(_plain(now))
    missing = object()
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing) and not k.startswith(RESUMABLE_CHANGES)]


def _legacy_differences(ckpt: dict[str, Any], model: nn.Module) -> list[tuple[str, Any, Any]]:
    """For checkpoints written before ``ConfigStamp``: the variant class and Lightning's saved
    hyper-parameters against the configured model's."""
    saved = dict(ckpt.get("hyper_parameters") or {})
    saved.pop("_instantiator", None)
    now = {"_class_path": f"{type(model).__module__.rsplit('.', 1)[0]}.{type(model).__name__}",
           **getattr(model, "hparams", {})}
    now.pop("_instantiator", None)
    if "_class_path" not in saved:
        now.pop("_class_path")
    return [(f"model.{k}", old, new) for k, old, new in config_differences(saved, now)]


def _added_at_default(key: str, value: Any, config: dict[str, Any]) -> bool:
    """Whether ``key``, absent from a checkpoint's stamp, is configured at its class's default
    (``repro.setting_defaults``): an argument added to the code after the checkpoint was written, which keeps the
    old behaviour."""
    default = setting_default(config, key)
    return default is not UNKNOWN and _plain(default) == value


def _shown(value: Any) -> str:
    return "(unset)" if type(value) is object else json.dumps(value)


def check_resume(path: Path, model: nn.Module, config: dict[str, Any],
                 defaults: dict[str, Any] | None = None) -> None:
    """Raise one-line ``ValueError`` / ``FileNotFoundError`` unless ``path`` can resume ``model``
    configured as ``config`` (the parsed ``repro fit`` configuration). ``defaults``: the default of each dotted key
    of a group without a class path (``evaluation.<arg>``), so an argument added since the checkpoint, at its
    default, is no difference."""
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: {path} is not a file")
    ckpt = safe_load(path, "ckpt_path")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "repro_rng" not in ckpt:
        raise ValueError(f"ckpt_path: {path} was not written by `repro fit` (no state_dict / repro_rng entries)")
    mine, theirs = model.state_dict(), ckpt["state_dict"]
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    shapes = [k for k in set(mine) & set(theirs) if tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or shapes:
        what = "; ".join(f"{label}: {', '.join(keys[:3])}" for label, keys in
                         (("missing", missing), ("unexpected", extra), ("other shape", sorted(shapes))) if keys)
        raise ValueError(f"ckpt_path: {path} holds a different model than the one configured ({what}); "
                         "resume with the config the checkpoint was trained with")
    if "repro_config" in ckpt:
        now = {key: config.get(key) for key in STAMPED if key in ckpt["repro_config"]}
        added = _plain(defaults or {})
        differences = [(k, old, new) for k, old, new in config_differences(ckpt["repro_config"], now)
                       if not (type(old) is object and (_added_at_default(k, new, _plain(now))
                                                        or (k in added and added[k] == new)))]
    else:
        differences = _legacy_differences(ckpt, model)
    if differences:
        shown = ", ".join(f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in differences[:6])
        more = f" and {len(differences) - 6} more" if len(differences) > 6 else ""
        raise ValueError(
            f"ckpt_path: {path} was trained with other settings ({shown}{more}); a resumed run keeps the "
            "checkpoint's settings, so resume with the config it was trained with (its run's config.yaml), "
            "or start a new run without --ckpt_path")


def net_from_checkpoint(ckpt: dict[str, Any], role: str) -> nn.Module:
    """The ``role`` net (``generator``, ``discriminator``) of a loaded ``repro fit`` checkpoint: built from its
    stamped config (``repro_config``), with the checkpoint's weights."""
    spec = ckpt["repro_config"]["model"]["init_args"][role]
    module, _, name = spec["class_path"].rpartition(".")
    args = {k: v for k, v in spec.get("init_args", {}).items() if k != "init" and not k.startswith("__")}
    net = getattr(importlib.import_module(module), name)(**args)
    net.load_state_dict({k[len(role) + 1:]: v for k, v in ckpt["state_dict"].items() if k.startswith(role + ".")})
    return net

"""Checks a ``repro fit`` configuration passes after it is built and before the first training step.

Each check raises ``ValueError`` with one line naming the key and the fix, so a run never fails
late (after hours of training, at evaluation) or with a traceback on something the configuration
already shows:

- ``check_trainer``: trainer numbers outside their domain, and Lightning options that repro's manual
  G/D loop cannot honour (they would fail at fit start with Lightning's traceback).
- ``check_sizes`` (on the parsed configuration, before anything is built) and ``check_networks``:
  degenerate network sizes (negative sizes, layers with no units, z_dim 0); then the model's own
  check that G and D fit the data's sample shape.
- ``check_evaluation``: everything the final evaluation will read (feature-extractor weights,
  the reference split, its size) and sample counts too small for the statistic.
- ``check_conditioning``: the conditioning trace only where it is finite (z_dim <= output size).
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from repro.callbacks import ConditioningTrace, FinalEvaluation

__all__ = ["check_sizes", "check_trainer", "check_networks", "check_evaluation", "check_conditioning", "check_run"]


def check_trainer(trainer: L.Trainer) -> None:
    """Trainer settings: positive intervals and budgets, nothing the manual optimization loop refuses."""
    if trainer.log_every_n_steps < 1:
        raise ValueError(f"trainer.log_every_n_steps must be >= 1, got {trainer.log_every_n_steps}")
    if trainer.max_steps == 0 or trainer.max_steps < -1:
        raise ValueError(f"trainer.max_steps must be >= 1 generator updates (or -1: no step limit), got {trainer.max_steps}")
    if trainer.max_epochs is not None and (trainer.max_epochs == 0 or trainer.max_epochs < -1):
        raise ValueError(f"trainer.max_epochs must be >= 1 (or -1 / null: no epoch limit), got {trainer.max_epochs}")
    limit = trainer.limit_train_batches
    if limit is not None and limit <= 0:
        raise ValueError(f"trainer.limit_train_batches must be > 0 (a fraction or a count), got {limit}")
    if trainer.accumulate_grad_batches != 1:
        raise ValueError("trainer.accumulate_grad_batches must be 1: repro steps G and D itself (one training step "
                         "is one generator update); raise data.batch_size instead")
    if trainer.gradient_clip_val:
        raise ValueError("trainer.gradient_clip_val must be unset: repro steps G and D itself; WGAN's clipping is "
                         "model.init_args.clip, a gradient penalty is a d_regularizer")


def check_sizes(config: dict[str, Any]) -> None:
    """Before anything is built: no negative integer among the arguments of the model's nested
    classes (networks, lens, autoencoder: all sizes), which torch would report without the key."""
    for key, value in _net_arguments((config.get("model") or {}).get("init_args") or {}, "model"):
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{key} must be >= 0 (a size), got {value}")


def check_networks(model: nn.Module) -> None:
    """A latent of at least one dimension, and no layer without units (a width, depth or channel count of 0)."""
    if getattr(model, "z_dim", 1) < 1:
        raise ValueError(f"model.generator.init_args.z_dim must be >= 1, got {model.z_dim}")
    for net_name in ("generator", "discriminator"):
        net = getattr(model, net_name, None)
        if net is None:
            continue
        empty = [name for name, p in net.named_parameters() if p.numel() == 0]
        if empty:
            raise ValueError(f"model.{net_name} has a layer with no units ({empty[0]}); set its widths, depth and "
                             "channel counts to sizes >= 1")


def _net_arguments(init_args: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every argument of the nested classes (networks, lens, autoencoder) in a
    model's ``init_args``."""
    out = []
    for name, value in init_args.items():
        if isinstance(value, dict) and "class_path" in value:
            nested = f"{prefix}.{name}.init_args"
            out += [(f"{nested}.{k}", v) for k, v in (value.get("init_args") or {}).items()]
            out += _net_arguments(value.get("init_args") or {}, nested)
    return out


def check_evaluation(evaluation: Any, datamodule: Any) -> None:
    """Everything the final evaluation of ``evaluation`` (a ``FinalEvaluation``) will need, now: the
    extractor's weights (loaded: missing or altered files fail here), that it can read the data's
    images, the reference split and its size, and sample counts the statistics are defined for."""
    # imported here: torchmetrics alone takes seconds, and the metric families are loaded only when used
    from repro.metrics.features import (ClassifierExtractor, InceptionExtractor, InceptionTSExtractor, default_extractor,
                                        inception_ts_path, inception_weights_path)
    from repro.metrics.image import check_sample_counts, reference_images

    settings = evaluation.settings
    selected = {family.name for family in evaluation.selected(datamodule)}
    if "toy_modes" in selected and settings.n_samples < 1:
        raise ValueError(f"evaluation.n_samples must be >= 1, got {settings.n_samples}")
    if "stacked_modes" in selected:
        ClassifierExtractor(settings.extractor_weights)
    if "image" not in selected:
        return
    name = settings.extractor or default_extractor(datamodule.dataset)
    n_is = settings.n_is
    if name == "inception":
        inception_weights_path(settings.extractor_weights)
        features = InceptionExtractor.num_features
    elif name == "inception-ts":  # its file, not loaded here; FID / KID only
        if not settings.extractor_weights:
            inception_ts_path()
        features, n_is = InceptionTSExtractor.num_features, 0
    else:
        features = ClassifierExtractor(settings.extractor_weights).num_features
        channels = datamodule.sample_shape[0]
        if channels != 1:
            raise ValueError(f"evaluation.extractor: the MNIST classifier reads one grey channel, but {datamodule.dataset} "
                             f"images have {channels}; use evaluation.extractor inception")
    n_reference = len(reference_images(datamodule, settings.reference_split))
    if settings.n_reference is not None:
        n_reference = min(n_reference, settings.n_reference)
    check_sample_counts(settings.n_fid, n_is, n_reference, features, name)


def check_conditioning(conditioning: Any, model: nn.Module, sample_shape: tuple[int, ...]) -> None:
    """The conditioning trace needs z_dim <= the output size: otherwise J^T J is singular and its
    condition number infinite at every step (``repro.metrics.conditioning``)."""
    if conditioning.every_n_steps is None:
        return
    out = 1
    for size in sample_shape:
        out *= size
    if model.z_dim > out:
        raise ValueError(f"conditioning.every_n_steps: with z_dim {model.z_dim} above the output size {out}, J^T J "
                         "is singular and its condition number infinite at every step; leave conditioning off "
                         "(null) for this generator")


def check_run(model: nn.Module, datamodule: Any, trainer: L.Trainer) -> None:
    """Every check above but ``check_sizes``, for a built ``repro fit`` run. The checks run on a forked random
    state: building the evaluation's classifier (its layers' initialisation) must not shift the run's random
    streams, so a run trains the same with and without image metrics."""
    with torch.random.fork_rng(devices=[]):
        _check_run(model, datamodule, trainer)


def _check_run(model: nn.Module, datamodule: Any, trainer: L.Trainer) -> None:
    check_trainer(trainer)
    check_networks(model)
    model.check_sample_shape(datamodule.sample_shape)
    if getattr(model, "num_classes", None) is not None and getattr(model, "labels_are_classes", True):
        datamodule.check_labels(model.num_classes)
    for callback in trainer.callbacks:
        if isinstance(callback, FinalEvaluation):
            callback.check_data(datamodule)
            check_evaluation(callback, datamodule)
        elif isinstance(callback, ConditioningTrace):
            check_conditioning(callback, model, datamodule.sample_shape)

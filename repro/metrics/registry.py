"""The metric registry: every metric family a run can report, registered once under its protocol name.

Modelled on stylegan2-ada's ``register_metric``: a name maps to the function that measures it. A
family here also declares the record keys it writes (``fid5k_train10k_inception`` is the ``image``
family's FID at 5,000 samples against a 10,000-image training subset with Inception features), which
data it can measure, and whether every DDP rank takes part. The final evaluation runs the configured
families (``evaluation.metrics``); a table spec checks each column against the keys the families
write, at load, before anything trains.

This module imports nothing heavy: a family's ``compute`` is named as ``"module:function"`` and
imported when a run is evaluated (the FID/KID/IS family pulls in torchmetrics, which alone takes
seconds), so ``repro tables`` can check specs without loading torch.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "MetricFamily",
    "EvaluationSettings",
    "EvalContext",
    "Measured",
    "register_metric",
    "family",
    "families",
    "family_of_key",
    "registered_names",
]

Measured = tuple[dict[str, float], dict[str, dict[str, Any]]]  # ({record key: value}, {record key: protocol})


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluation`` config group: sample counts, seed, extractor and reference set of every family."""

    n_samples: int = 2500
    seed: int = 1234
    extractor: str | None = None
    extractor_weights: str | None = None
    n_fid: int = 10_000
    n_is: int = 50_000
    reference_split: str = "train"
    n_reference: int | None = None
    n_stacked: int = 26_000
    n_per_class: int = 1000
    batch_size: int = 500
    cache_dir: Path | None = None
    truncation: tuple[float, ...] = ()


@dataclass(frozen=True)
class EvalContext:
    """What a family measures: ``sample(n)`` draws n samples in model space (EMA weights when on; a
    class-conditional model's ``sample(n, y=labels)`` of given classes, ``num_classes`` set when the model's
    labels are the data set's classes: not for S2GAN's cluster ids), ``datamodule`` holds the real data,
    ``weights`` says which generator weights ("ema" / "final")."""

    sample: Callable[[int], Any]
    datamodule: Any
    device: Any
    weights: str
    settings: EvaluationSettings
    rank: int = 0
    world_size: int = 1
    num_classes: int | None = None


@dataclass(frozen=True)
class MetricFamily:
    """One registered family: its protocol ``name``, the record ``keys`` it writes (regular expressions,
    shown to users as ``forms``), the data it ``applies`` to, whether it costs enough to run only when
    ``evaluation.image_metrics`` asks for it (``on_request``), whether every DDP rank shares the work
    (``all_ranks``; else rank 0 alone), and ``compute`` as ``"module:function"``."""

    name: str
    keys: tuple[re.Pattern[str], ...]
    forms: str
    applies: Callable[[Any], bool]
    compute: str
    on_request: bool = False
    all_ranks: bool = False
    description: str = ""

    def writes(self, key: str) -> bool:
        """Whether this family's records hold ``key``, also as measured on truncated latents (``key_trunc0.5``)."""
        key = TRUNCATED.sub("", key)
        return any(pattern.fullmatch(key) for pattern in self.keys)

    def run(self, ctx: EvalContext) -> Measured:
        """Measure: imports and calls ``compute`` (on every rank for ``all_ranks`` families)."""
        module, _, function = self.compute.partition(":")
        return getattr(importlib.import_module(module), function)(ctx)


_FAMILIES: dict[str, MetricFamily] = {}
# a metric of samples drawn from truncated latents (``evaluation.truncation``; ``repro.latents.truncation_suffix``)
TRUNCATED = re.compile(r"_trunc\d+(\.\d+)?(e-?\d+)?$")


def register_metric(name: str, *, keys: tuple[str, ...], forms: str, applies: Callable[[Any], bool], compute: str,
                    on_request: bool = False, all_ranks: bool = False, description: str = "") -> MetricFamily:
    """Register a family once under ``name``; registering a name twice is an error."""
    if name in _FAMILIES:
        raise ValueError(f"metric family {name!r} is registered twice")
    fam = MetricFamily(name, tuple(re.compile(k) for k in keys), forms, applies, compute, on_request, all_ranks,
                       description)
    _FAMILIES[name] = fam
    return fam


def families() -> list[MetricFamily]:
    return list(_FAMILIES.values())


def registered_names() -> str:
    """``name (key forms)`` of every family, for error messages."""
    return "; ".join(f"{f.name} ({f.forms})" for f in _FAMILIES.values())


def family(name: str) -> MetricFamily:
    """The family registered as ``name``; one error listing the registered ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown metric family {name!r}; registered: {registered_names()}")
    return _FAMILIES[name]


def family_of_key(key: str) -> MetricFamily | None:
    """The family whose records hold ``key`` (e.g. ``modes_2500`` -> toy_modes), or None."""
    return next((f for f in _FAMILIES.values() if f.writes(key)), None)


_N = r"\d+k?"  # a sample count as metric names print it: 2500, 5k, 10k

register_metric(
    "toy_modes",
    keys=(rf"(modes|high_quality|reverse_kl|jsd)_{_N}",),
    forms="modes_N, high_quality_N, reverse_kl_N, jsd_N",
    applies=lambda dm: getattr(dm, "mixture", None) is not None,
    compute="repro.metrics.toy:evaluate",
    description="modes covered, share of high-quality samples, reverse KL and JSD to uniform (VEEGAN Sec. 5.1, PacGAN Table 1)",
)
register_metric(
    "image",
    keys=(rf"(fid|kid){_N}_(train|test)({_N})?_[A-Za-z0-9-]+(_std)?", rf"is{_N}_[A-Za-z0-9-]+(_std)?"),
    forms="fidN_SPLIT[M]_EXTRACTOR, kidN_SPLIT[M]_EXTRACTOR[_std], isN_EXTRACTOR[_std]",
    applies=lambda dm: not getattr(dm, "is_toy", False) and getattr(dm, "dataset", "") != "stacked-mnist",
    compute="repro.metrics.image:evaluate",
    on_request=True,
    all_ranks=True,
    description="FID / KID / IS against a reference split (Heusel et al. 2017, Binkowski et al. 2018, Salimans et al. 2016)",
)
register_metric(
    "stacked_modes",
    keys=(rf"(modes|kl){_N}_classifier",),
    forms="modesN_classifier, klN_classifier",
    applies=lambda dm: getattr(dm, "dataset", "") == "stacked-mnist",
    compute="repro.metrics.stacked:evaluate",
    on_request=True,
    description="digit triples found and reverse KL to uniform (VEEGAN Sec. 5.2, PacGAN Table 2)",
)
register_metric(
    "per_class",
    keys=(rf"class_acc{_N}_classifier(_min|_c\d+)?", rf"intra_fid{_N}_(train|test)({_N})?_classifier(_c\d+)?"),
    forms="class_accN_classifier[_min|_cK], intra_fidN_SPLIT[M]_classifier[_cK]",
    applies=lambda dm: getattr(dm, "dataset", "") == "mnist",
    compute="repro.metrics.per_class:evaluate",
    on_request=True,
    description="class-conditional models only: per class, the MNIST classifier's accuracy on samples of that class "
                "and the FID of those samples against the real images of the class (intra-class FID, Miyato & "
                "Koyama 2018, Sec. 5), with their means over classes",
)

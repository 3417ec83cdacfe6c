"""End-of-training evaluation: the configured registry metrics, written as the run record (``repro.record``),
and the same metrics at points through training (metric curves)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from repro.callbacks.rundir import run_dir
from repro.ema import kept_norm_statistics, standing_statistics
from repro.latents import truncation_suffix
from repro.metrics.features import EXTRACTORS
from repro.metrics.registry import EvalContext, EvaluationSettings, MetricFamily, families, family
from repro.record import CURVE_TAIL, Status, machine, write_record

__all__ = ["FinalEvaluation", "curve_steps", "REFERENCE_SPLITS", "steps_asked", "run_status", "truncated_sampler"]

REFERENCE_SPLITS = ("train", "test")


def truncated_sampler(module: Any, threshold: float) -> Callable[[int], torch.Tensor]:
    """``sample(n, y=None)``: ``module``'s samples (EMA weights if on; of classes ``y`` for a class-conditional
    model) from latents truncated at ``threshold``."""
    return lambda n, y=None: module.sample(z=module.sample_z(n, truncation=threshold), y=y)


def steps_asked(trainer: L.Trainer) -> int | None:
    """The generator steps a run was asked for: ``max_steps``, or ``max_epochs`` passes over the data,
    whichever is fewer; None when nothing but a time limit bounds it."""
    asked = [trainer.max_steps] if trainer.max_steps is not None and trainer.max_steps > 0 else []
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and batches != float("inf"):
        asked.append(trainer.max_epochs * int(batches))
    return min(asked) if asked else None


def run_status(trainer: L.Trainer, done: int | None = None) -> dict[str, Any]:
    """``status: finished`` only when the run reached the length it was asked for; otherwise
    ``status: stopped`` with why (``max_time`` reached, interrupted, or stopped by a callback).
    Both carry ``generator_steps`` (done: ``done``, default the trainer's step) and ``steps_asked``."""
    asked, done = steps_asked(trainer), trainer.global_step if done is None else done
    record: dict[str, Any] = {"status": Status.FINISHED.value, "generator_steps": done, "steps_asked": asked}
    if asked is None or done >= asked:
        return record
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        reason = "trainer.max_time reached"
    elif trainer.interrupted:
        reason = "interrupted"
    else:
        reason = "stopped early by a callback"
    return record | {"status": Status.STOPPED.value, "stop_reason": f"{reason} at generator step {done} of {asked}"}


def curve_steps(max_steps: int, curve_points: int, tail_points: int = 0) -> set[int]:
    """The generator steps, before the last, at which a run evaluates its curve: ``round(i * max_steps /
    curve_points)`` for i = 1 .. curve_points - 1, and ``round(max_steps * (1 - CURVE_TAIL * j / tail_points))``
    for j = 1 .. tail_points (the last of those at the tail's start)."""
    even = {round(i * max_steps / curve_points) for i in range(1, curve_points)} if curve_points > 1 else set()
    tail = {round(max_steps * (1 - CURVE_TAIL * j / tail_points)) for j in range(1, tail_points + 1)}
    return (even | tail) - {0, max_steps}


class FinalEvaluation(L.Callback):
    """After fit: evaluate the final (EMA if on) generator with the registered metric families
    (``repro.metrics.registry``) and write the run record.

    ``metrics`` names the families to run; by default every family that applies to the data, the
    costly ones (FID / KID / IS, stacked-MNIST modes) only when ``image_metrics`` is on. The settings:
    2-D mixtures: mode metrics on ``n_samples`` samples (PacGAN: 2,500). Images: FID / KID of ``n_fid``
    and IS of ``n_is`` samples with feature ``extractor`` (default: ``classifier`` for MNIST and digits,
    ``inception`` otherwise) against the ``reference_split`` (all of it, or a seeded subset of
    ``n_reference``); stacked MNIST: the digit triples of ``n_stacked`` samples (VEEGAN's 26,000); a
    class-conditional MNIST model: ``n_per_class`` samples of each class (classifier accuracy, intra-class FID).
    Every value gets its protocol in ``metrics.json["protocols"]``.

    Truncation sweep: each threshold t of ``truncation`` measures the same families again on samples from
    latents drawn from N(0, I) truncated to [-t, t] (BigGAN's truncation trick, Brock et al. 2019, Sec. 3.1),
    written under the key with ``_trunc<t>`` appended (``fid10k_train_inception_trunc0.5``), one column each;
    their protocols record ``truncation: t``. The untruncated keys are measured as before.

    Curves: with ``curve_points`` = P > 1 the same metrics, with the same protocol, are also evaluated after
    ``round(i * max_steps / P)`` generator updates for i = 1 .. P-1 (under ``inference_mode``, the training RNG
    untouched) and written with the final value to ``metrics.json["curves"]``: ``{metric: [[step, value], ...]}``,
    plus the cumulative training seconds at each point (``curve_seconds``). They cost P-1 extra evaluations.
    ``tail_points`` = Q adds Q points spread evenly over the last ``CURVE_TAIL`` (20 %) of training, ending at its
    start, where the tables' convergence rule fits its trend (``curve_steps``): a tail of three points through a
    noisy metric cannot place a trend, one of Q + 3 can.
    The points done and the training time so far are kept in checkpoints, so a resumed run's curve and
    ``train_seconds`` are those of one uninterrupted run.

    G's batch-norm statistics: by default an evaluation samples with the running averages training kept, an EMA
    that lags the moving weights. ``bn_standing_batches`` = N > 0 re-estimates them at the evaluated weights first,
    as the cumulative average over N batches (of the training batch size) of fresh latents from a fixed seed
    (``repro.ema.standing_statistics``), and puts the running averages back after, so training, its RNG and resume
    are untouched; the protocols record it (``bn_statistics``). PacGAN's code does the like before each epoch's
    evaluation: its train-set monitoring pass applies the BN population updates (weight 0.05) on 50 batches of 100
    at the epoch's weights (`fjxmlzn/PacGAN`, pacgan_task.py, ``DataStreamMonitoring(..., updates=bn_updates)``),
    which leaves 0.95^50 = 8 % of the old averages. An EMA generator always gets standing statistics
    (``GANModule.sample``), so the option changes nothing there.

    Evaluation only: resumed from a checkpoint at ``max_steps`` (a run that trained to its length and then
    failed at evaluation, whose ``in_progress`` checkpoint ``ResumableCheckpoint`` wrote before this
    evaluation), the run trains nothing and this callback evaluates the restored weights at the start of fit.
    An evaluation error is raised at the end of fit, after every other end-of-training hook (final
    figures) has run, so the retry has only the evaluation left to do.
    """

    def __init__(
        self,
        n_samples: int = 2500,
        seed: int = 1234,
        image_metrics: bool = False,
        metrics: list[str] | None = None,
        extractor: str | None = None,
        extractor_weights: str | None = None,
        n_fid: int = 10_000,
        n_is: int = 50_000,
        reference_split: str = "train",
        n_reference: int | None = None,
        n_stacked: int = 26_000,
        n_per_class: int = 1000,
        batch_size: int = 500,
        cache_dir: str | None = None,
        curve_points: int = 0,
        tail_points: int = 0,
        truncation: list[float] | None = None,
        bn_standing_batches: int = 0,
    ):
        if reference_split not in REFERENCE_SPLITS:
            raise ValueError(f"evaluation.reference_split: {reference_split!r}; valid: {', '.join(REFERENCE_SPLITS)}")
        if extractor is not None and extractor not in EXTRACTORS:
            raise ValueError(f"evaluation.extractor: {extractor!r}; valid: {', '.join(EXTRACTORS)}")
        for key, n in (("n_fid", n_fid), ("n_is", n_is), ("n_stacked", n_stacked), ("n_per_class", n_per_class),
                       ("batch_size", batch_size)):
            if n < 2:
                raise ValueError(f"evaluation.{key} must be >= 2, got {n}")
        for key, n in (("curve_points", curve_points), ("tail_points", tail_points),
                       ("bn_standing_batches", bn_standing_batches)):
            if n < 0:
                raise ValueError(f"evaluation.{key} must be >= 0, got {n}")
        if any(not t > 0 for t in truncation or []) or len(set(truncation or [])) != len(truncation or []):
            raise ValueError(f"evaluation.truncation must be distinct thresholds > 0, got {truncation}")
        try:
            self.families = None if metrics is None else [family(name) for name in metrics]
        except ValueError as err:
            raise ValueError(f"evaluation.metrics: {err}") from None
        self.image_metrics = image_metrics
        self.settings = EvaluationSettings(
            n_samples=n_samples, seed=seed, extractor=extractor, extractor_weights=extractor_weights, n_fid=n_fid,
            n_is=n_is, reference_split=reference_split, n_reference=n_reference, n_stacked=n_stacked,
            n_per_class=n_per_class,
            batch_size=batch_size, cache_dir=Path(cache_dir) if cache_dir else None,
            truncation=tuple(truncation or ()),
        )
        self.curve_points, self.tail_points = curve_points, tail_points
        self.bn_standing_batches = bn_standing_batches
        self.record: dict[str, Any] = {}  # the last record written
        self.curve: list[dict[str, Any]] = []  # one entry per point: step, train_seconds, metric values
        self._t0, self._seconds_before = 0.0, 0.0
        self._curve_steps: set[int] = set()
        self._restored_step: int | None = None
        self._error: BaseException | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "train_seconds": self.train_seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self._seconds_before = list(state["curve"]), float(state["train_seconds"])

    def train_seconds(self) -> float:
        """Training wall time so far, summed over resumed segments."""
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def selected(self, datamodule: Any) -> list[MetricFamily]:
        """The families this run measures: the configured ones, else those that apply to the data."""
        if self.families is not None:
            return self.families
        return [f for f in families() if f.applies(datamodule) and (self.image_metrics or not f.on_request)]

    def check_data(self, datamodule: Any) -> None:
        """Raise ``ValueError`` if a configured family cannot measure this (set-up) data module's data."""
        wrong = [f.name for f in self.families or [] if not f.applies(datamodule)]
        if wrong:
            raise ValueError(f"evaluation.metrics: {', '.join(wrong)} cannot measure data set {datamodule.dataset!r}")

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restored_step = checkpoint.get("global_step")

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.check_data(trainer.datamodule)  # set up by now: Lightning sets the data module up before this hook
        step = self._restored_step
        if step is not None and 0 < trainer.max_steps <= step:  # weights restored by now; fit will train nothing
            print(f"the checkpoint is at generator step {step} of {trainer.max_steps}: evaluating only", flush=True)
            self._finish(trainer, module, step)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._error is not None:
            raise self._error

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        if trainer.max_steps and trainer.max_steps > 0:
            self._curve_steps = curve_steps(trainer.max_steps, self.curve_points, self.tail_points)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step not in self._curve_steps or any(point["step"] == step for point in self.curve):
            return
        seconds = self.train_seconds()
        with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
            values = self.evaluate(trainer, module)
        self._t0 += self.train_seconds() - seconds  # evaluation time is not training time
        if values is not None:
            self.curve.append({"step": step, "train_seconds": seconds, "metrics": values[0]})

    def evaluate(self, trainer: L.Trainer, module: L.LightningModule) -> tuple[dict, dict] | None:
        """The selected families on the current (EMA if on) generator: ``(values, protocols)`` on rank 0;
        ``None`` on other ranks (which draw their share of the shared families' samples) and when none applies."""
        with kept_norm_statistics(module.generator):
            standing = self._standing_statistics(trainer, module)
            evaluated = self._evaluate(trainer, module)
        if evaluated is None or standing is None:
            return evaluated
        values, protocols = evaluated
        return values, {k: {**p, "bn_statistics": standing} for k, p in protocols.items()}

    def _standing_statistics(self, trainer: L.Trainer, module: L.LightningModule) -> str | None:
        """Re-estimate G's batch-norm statistics at its current weights (``bn_standing_batches``); what was done,
        for the protocols, or None when nothing was (option off, an EMA generator, or no batch norm in G)."""
        net = module.generator
        if (not self.bn_standing_batches or getattr(module, "generator_ema", None) is not None
                or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())):
            return None
        batch = int(trainer.datamodule.batch_size)
        standing_statistics(net, module.z_dim, module.device, n_batches=self.bn_standing_batches, batch_size=batch,
                            num_classes=getattr(module, "num_classes", None), dtype=module.dtype)
        return (f"standing: the cumulative average over {self.bn_standing_batches} batches of {batch} fresh latents "
                "at the evaluated weights")

    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule) -> tuple[dict, dict] | None:
        dm, rank = trainer.datamodule, trainer.global_rank
        weights = "ema" if getattr(module, "generator_ema", None) is not None else "final"
        values: dict[str, float] = {}
        protocols: dict[str, dict[str, Any]] = {}
        for threshold in (None, *self.settings.truncation):
            sample = module.sample if threshold is None else truncated_sampler(module, threshold)
            classes = getattr(module, "num_classes", None) if getattr(module, "labels_are_classes", True) else None
            ctx = EvalContext(sample, dm, module.device, weights, self.settings, rank, trainer.world_size, classes)
            suffix = "" if threshold is None else truncation_suffix(threshold)
            for fam in self.selected(dm):
                if rank == 0 or fam.all_ranks:
                    measured, protocol = fam.run(ctx)
                    values |= {k + suffix: v for k, v in measured.items()}
                    extra = {} if threshold is None else {"truncation": threshold}
                    protocols |= {k + suffix: {**p, **extra} for k, p in protocol.items()}
        return (values, protocols) if rank == 0 and values else None

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        try:
            self._finish(trainer, module, trainer.global_step)
        except Exception as err:  # noqa: BLE001 - raised again in on_fit_end, after the other end hooks
            self._error = err

    def _finish(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        """Evaluate the final weights after ``step`` generator updates and write the run record."""
        seconds = self.train_seconds()
        evaluated = self.evaluate(trainer, module)
        if trainer.global_rank != 0:
            return
        record: dict[str, Any] = {
            **run_status(trainer, step),
            "train_seconds": seconds,
            "weights": "ema" if getattr(module, "generator_ema", None) is not None else "final",
            "machine": machine(module.device),
        }
        if evaluated is not None:
            record["metrics"], record["protocols"] = evaluated
            for logger in trainer.loggers:
                logger.log_metrics({f"eval/{k}": v for k, v in evaluated[0].items()}, step=step)
            if self.curve:
                points = [*self.curve, {"step": step, "train_seconds": seconds, "metrics": evaluated[0]}]
                record["curves"] = {k: [[p["step"], p["metrics"].get(k)] for p in points] for k in evaluated[0]}
                record["curve_seconds"] = [[p["step"], round(p["train_seconds"], 2)] for p in points]
        self.record = record
        write_record(record, run_dir(trainer))

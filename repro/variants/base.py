"""GANModule: the training loop every variant shares (manual optimization).

One ``training_step`` is one generator iteration (Goodfellow et al. 2014, Alg. 1): ``n_dis``
discriminator steps, each on its own real batch and fresh z, then one generator step, which also
receives the last real batch. ``updates: simultaneous`` instead steps D and G once each from the same
real batch and the same fakes, both gradients taken before either player moves; ``updates: shared_z``
alternates as the default does but gives the G step the last D step's latents (the loop of DCGAN-tensorflow
and PacGAN's code, which feed one z batch to both updates), computing G's forward once for both. The trainer's
``global_step`` counts generator updates, so ``trainer.max_steps`` is the papers' "generator
updates". A variant overrides only the hooks where it differs:

- the objective (``loss``; ``repro.losses``), whose G loss may also see D's output on real data;
- ``discriminate(x)``      what D outputs for an input (gradient normalization lives here);
- ``real_input(x)``        what D sees for real data (TAN's lens);
- ``d_fakes(n)``           the fakes a D step trains against (xICFG's functional-gradient pushes);
- ``d_regularizers`` / ``g_regularizers``  extra loss terms (gradient penalty, Jacobian clamping, ...);
- ``after_d_step(real, fake)``  work after each D update (weight clipping, TAN's lens update);
- ``training_labels(datamodule)``  the labels served with the real data in labelled training, when they are not
  the data set's own classes (S3GAN's partly hidden labels, S2GAN's cluster ids);
- ``extra_optimizers()``   optimizers of extra networks, stepped by the variant;
- ``prepare(datamodule)`` / ``preparation_missing(datamodule)``  one-off cached work before training
  (RFGAN's autoencoder pre-training): ``repro prepare`` runs it, ``repro fit`` when it is missing.

Class labels: with ``num_classes`` set the data module serves ``(images, labels)`` batches and the loop
hands labels to every hook above as ``y`` (real labels) / ``y_fake`` (uniformly drawn labels of the fakes,
as in Miyato & Koyama's code): G(z, y), D(x, y). Without it nothing changes (hooks are called without
labels), so a variant overriding a hook without a ``y`` argument is refused for labelled training.

``class X(GANModule, name="x")`` registers a variant under ``repro.variants.VARIANTS``. DDP sync,
per-rank RNG and the lean step test live in ``repro.distributed``; the EMA in ``repro.ema``.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Literal

import lightning as L
import torch
from lightning.pytorch.core.optimizer import do_nothing_closure
from torch import Tensor, nn

from repro import distributed
from repro.ema import decay_at, standing_statistics, update_ema as lerp_ema
from repro.latents import truncated_normal
from repro.losses import objective
from repro.nets.base import check_shapes
from repro.normalization import check_per_sample
from repro.regularizers import Regularizer, term_names

__all__ = ["GANModule", "check_betas", "linear_lr_decay", "LABELLED_HOOKS"]

Betas = tuple[float, float]
# The hooks that see samples; in labelled training each must take the samples' labels (a ``y`` argument).
LABELLED_HOOKS = ("training_step", "simultaneous_step", "d_step", "g_step", "d_fakes", "discriminate",
                  "discriminator_loss", "generator_loss", "sample", "after_d_step")


@dataclass
class Fakes:
    """Latents ``z``, the labels drawn with them (None: unconditional) and G's output ``x`` on them, with its graph."""
    z: Tensor
    x: Tensor
    y: Tensor | None


def _y(y: Tensor | None, name: str = "y") -> dict[str, Tensor]:
    """Keyword arguments passing labels to a hook only when there are labels (unlabelled hooks take none)."""
    return {} if y is None else {name: y}


def check_betas(name: str, betas: Betas) -> None:
    """Adam's (beta1, beta2) must both lie in [0, 1) (Kingma & Ba 2015, Alg. 1); ``ValueError`` names ``model.<name>``."""
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"model.{name} must be two numbers in [0, 1) (Adam's beta1, beta2), got {list(betas)}")


def linear_lr_decay(total: int) -> Callable[[int], float]:
    """Learning-rate multiplier after ``step`` generator updates: 1 at the start, 0 at ``total``."""
    return lambda step: max(0.0, 1.0 - step / total)


class GANModule(L.LightningModule):
    """Shared GAN loop.

    Args:
        generator: maps z (``generator.z_dim``) to a sample.
        discriminator: maps a sample to one output per sample.
        loss: objective name in ``repro.losses.OBJECTIVES``; ``loss_args`` go to it.
        n_dis: discriminator steps per generator step.
        lr_g, lr_d, betas_g, betas_d: per-player learning rates and Adam betas (TTUR when they differ).
        optimizer: "adam" or "rmsprop" (both players).
        g_batch_size: latent batch of a generator step (default: the real batch size).
        ema_decay: decay of an exponential moving average of G's weights (None: off).
        ema_start: the EMA copies G's weights until this generator update, then averages (BigGAN-PyTorch's
            ``--ema_start``; 0: averages from the first update).
        ema_standing_batches: batches of 256 latents over which the EMA generator's batch-norm statistics are
            re-estimated before it samples (BigGAN-PyTorch's ``--num_standing_accumulations``, default 16).
        lr_decay: "linear" decays both learning rates linearly to 0 at ``trainer.max_steps``.
        d_regularizers, g_regularizers: extra terms added to D's / G's loss.
        n_fixed: size of the fixed latent batch used for sample grids.
        compile_nets: ``torch.compile`` G and D in place at fit start. Off by default: measured slower
            on CPU for these nets (results/bench/); refused when D is differentiated twice (gradient
            penalty, gradient normalization), which torch.compile does not support.
        updates: "alternating" (D then G on fresh latents, the default), "shared_z" (D then G, the G step on the
            last D step's latents and labels, whose G forward it reuses: G has not moved in between, so this is
            the same update as recomputing it, one G forward cheaper; needs no g_batch_size) or "simultaneous"
            (both players' gradients at the same point, from one real batch and one set of fakes; needs n_dis 1,
            no g_batch_size).
        channels_last: store G's, D's (and the EMA G's) 4-D weights in channels-last (NHWC) order, so oneDNN's
            convolutions run on NHWC activations without reordering. Same math, other rounding (another
            summation order: one step's gradients agree to float rounding, tests/test_speed_paths.py); on one
            CPU thread an MNIST CNN iteration costs ~10-15 % less, a stacked-MNIST Metz iteration ~20 % less
            (README, Performance). Off by default: committed runs were made without it.
        num_classes: train on class labels: G(z, y) and D(x, y) (the nets' own ``num_classes`` must match);
            None (default): unconditional.
    """

    registry: ClassVar[dict[str, type["GANModule"]]] = {}
    # Whether label k is the data set's class k (per-class metrics compare them); False for S2GAN's cluster ids.
    labels_are_classes: ClassVar[bool] = True
    # Settings whose effect depends on ``trainer.max_steps``, each with the value at which it does not. With every
    # one at that value the first N updates of a longer run are the N-update run, so a finished run is lengthened
    # by continuing its final state (``repro.tables.extend``); a variant with another such setting adds it here.
    LENGTH_DEPENDENT: ClassVar[dict[str, Any]] = {"lr_decay": "none"}

    @classmethod
    def length_dependence(cls, init_args: dict[str, Any]) -> list[str]:
        """The settings of a resolved ``model.init_args`` that tie training to ``trainer.max_steps``, as
        ``model.<name>: <value>`` (a setting missing from it counts: its value is not known); [] when none does."""
        missing = object()
        return [f"model.{name}: {init_args.get(name, '(not in the config)')}"
                for name, neutral in cls.LENGTH_DEPENDENT.items() if init_args.get(name, missing) != neutral]

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        """``class X(GANModule, name="x")`` registers ``X`` as the variant ``x``."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            if GANModule.registry.get(name, cls) is not cls:
                raise ValueError(f"variant name {name!r} is taken by {GANModule.registry[name].__qualname__}")
            GANModule.registry[name] = cls

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: str = "nonsaturating",
        loss_args: dict[str, float] | None = None,
        n_dis: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: Betas = (0.5, 0.999),
        betas_d: Betas = (0.5, 0.999),
        optimizer: Literal["adam", "rmsprop"] = "adam",
        g_batch_size: int | None = None,
        ema_decay: float | None = None,
        lr_decay: Literal["none", "linear"] = "none",
        d_regularizers: list[Regularizer] | None = None,
        g_regularizers: list[Regularizer] | None = None,
        n_fixed: int = 64,
        compile_nets: bool = False,
        updates: Literal["alternating", "shared_z", "simultaneous"] = "alternating",
        num_classes: int | None = None,
        ema_start: int = 0,
        channels_last: bool = False,
        ema_standing_batches: int = 16,
    ):
        super().__init__()
        if n_dis < 1:
            raise ValueError(f"model.n_dis must be >= 1, got {n_dis}")
        for name, lr in (("lr_g", lr_g), ("lr_d", lr_d)):
            if not lr > 0:
                raise ValueError(f"model.{name} must be > 0, got {lr}")
        for name, betas in (("betas_g", betas_g), ("betas_d", betas_d)):
            check_betas(name, betas)
        for name, n in (("g_batch_size", g_batch_size), ("n_fixed", n_fixed),
                        ("ema_standing_batches", ema_standing_batches)):
            if n is not None and n < 1:
                raise ValueError(f"model.{name} must be >= 1, got {n}")
        if ema_start < 0:
            raise ValueError(f"model.ema_start must be >= 0 (a generator update), got {ema_start}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        if not hasattr(generator, "z_dim"):
            raise ValueError("model.generator must have a z_dim attribute (the latent size)")
        if updates not in ("alternating", "shared_z", "simultaneous"):
            raise ValueError(f"model.updates must be 'alternating', 'shared_z' or 'simultaneous', got {updates!r}")
        if updates == "shared_z":
            self.check_shared_z(g_batch_size)
        if updates == "simultaneous" and (n_dis != 1 or g_batch_size is not None):
            raise ValueError(
                "model.updates: simultaneous steps D and G once each on the same fakes; "
                f"set model.n_dis: 1 and model.g_batch_size: null (got {n_dis}, {g_batch_size})"
            )
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2 (or null: unconditional), got {num_classes}")
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "d_regularizers", "g_regularizers"])
        self.generator, self.discriminator = generator, discriminator
        self.objective = objective(loss, **(loss_args or {}))
        self.n_dis, self.g_batch_size, self.ema_decay = n_dis, g_batch_size, ema_decay
        self.num_classes = num_classes
        self.d_regularizers: list[Regularizer] = list(d_regularizers or [])
        self.g_regularizers: list[Regularizer] = list(g_regularizers or [])
        for reg in self.d_regularizers:
            if getattr(reg, "per_sample_d_gradient", False):  # e.g. a gradient penalty: ||grad_x D(x_i)|| per sample
                check_per_sample(discriminator, type(reg).__name__)
        # regularizers with state (historical averaging's running mean) keep it in the checkpoint
        self.regularizer_state = nn.ModuleList(r for r in (*self.d_regularizers, *self.g_regularizers)
                                               if isinstance(r, nn.Module))
        if channels_last:  # Module.to converts only 4-D parameters and buffers; the math is unchanged
            for net in (generator, discriminator):
                net.to(memory_format=torch.channels_last)
        self.generator_ema: nn.Module | None = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("fixed_z", torch.randn(n_fixed, generator.z_dim, generator=torch.Generator().manual_seed(0)))
        self._last: dict[str, Tensor] = {}
        self._terms: dict[str, Tensor] = {}  # the latest regularizer terms, detached (``add_regularizers``)
        self._ema_version, self._ema_stats_version = 0, -1
        self._lean_steps = False  # set at fit start by distributed.wrappers_idle
        self.check_label_support()

    def check_shared_z(self, g_batch_size: int | None) -> None:
        """``updates: shared_z`` hands the base loop's D-step fakes to its G step: refused for a G batch of
        another size and for a variant that replaces the steps or their fakes."""
        if g_batch_size is not None:
            raise ValueError(f"model.updates: shared_z gives the G step the D step's latents; set model.g_batch_size: "
                             f"null (got {g_batch_size}) or use updates: alternating")
        replaced = [name for name in ("d_fakes", "d_step", "g_step") if getattr(type(self), name) is not getattr(GANModule, name)]
        if replaced:
            raise ValueError(f"model.updates: shared_z shares the base loop's fakes between its D and G steps, and "
                             f"{type(self).__name__} replaces {', '.join(replaced)}; use updates: alternating")

    # ----------------------------------------------------------------- class labels
    def check_label_nets(self) -> None:
        """With ``num_classes``, G and D must take labels of that many classes (their ``num_classes``); without,
        neither may. One clear ``ValueError`` otherwise (a variant whose D uses labels otherwise overrides this)."""
        for role, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            self.check_net_labels(role, net, getattr(net, "num_classes", None))

    def check_net_labels(self, role: str, net: nn.Module, net_classes: int | None) -> None:
        """One clear ``ValueError`` unless ``net`` (``model.<role>``) is built for ``num_classes`` labels."""
        if net_classes == self.num_classes:
            return
        if self.num_classes is None:
            raise ValueError(f"model.{role} ({type(net).__name__}) is class-conditional (num_classes {net_classes}); "
                             f"set model.num_classes: {net_classes} to train on labels, or drop the net's num_classes")
        raise ValueError(f"model.num_classes is {self.num_classes} but model.{role} ({type(net).__name__}) "
                         f"{'takes no labels' if net_classes is None else f'has num_classes {net_classes}'}; set its "
                         f"num_classes: {self.num_classes} (conditional BN in G; a projection D, "
                         "repro.nets.ProjectionDiscriminator)")

    def check_label_support(self) -> None:
        """Refuse labelled training (``num_classes``) with a hook override that takes no labels, or a
        regularizer that runs a net on inputs of its own (the labels of those are not defined); check the nets."""
        self.check_label_nets()
        if self.num_classes is None:
            return
        for hook in LABELLED_HOOKS:
            if getattr(type(self), hook) is getattr(GANModule, hook):
                continue
            params = inspect.signature(getattr(self, hook)).parameters
            if "y" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                raise ValueError(f"model.num_classes: {type(self).__name__} does not support class labels (its {hook} "
                                 "takes none); use model.num_classes: null, or a variant that does")
        for reg in (*self.d_regularizers, *self.g_regularizers):
            if getattr(reg, "runs_nets", False):
                raise ValueError(f"model.num_classes: {type(reg).__name__} runs a net on inputs of its own, whose "
                                 "labels are not defined; drop it or set model.num_classes: null")

    def sample_labels(self, n: int) -> Tensor | None:
        """``n`` class labels drawn uniformly (the fakes' labels), or None (no draw) without ``num_classes``."""
        if self.num_classes is None:
            return None
        return self.sample_noise(lambda m: torch.randint(self.num_classes, (m,), device=self.device), n)

    def split_batch(self, batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
        """A training batch as (samples, labels or None): labelled data modules serve ``(x, y)`` pairs."""
        if self.num_classes is None:
            return batch, None
        x, y = batch
        return x, y

    # ----------------------------------------------------------------- hooks for variants
    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    def generate(self, z: Tensor, y: Tensor | None = None, net: nn.Module | None = None) -> Tensor:
        """G(z), or G(z, y) with labels; ``net`` another generator (the EMA one)."""
        net = self.generator if net is None else net
        return net(z) if y is None else net(z, y)

    def discriminate(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's output for ``x`` (one value per sample), given labels ``y`` in labelled training."""
        return self.discriminator(x) if y is None else self.discriminator(x, y)

    def real_input(self, x: Tensor) -> Tensor:
        """What D sees for a real batch."""
        return x

    def d_fakes(self, n: int, y: Tensor | None = None) -> Tensor:
        """The ``n`` (detached) fakes a D step trains against: G(z) (G(z, y) with labels) for fresh z."""
        with torch.no_grad():
            return self.generate(self.sample_z(n), y)

    def after_d_step(self, real: Tensor, fake: Tensor, y: Tensor | None = None, y_fake: Tensor | None = None) -> None:
        """Called after every D update with the real batch and the (detached) fakes it used (labels ``y``,
        ``y_fake`` in labelled training)."""

    def training_labels(self, datamodule: Any) -> Tensor | None:
        """The labels the data module serves with its training items in labelled training: one per item, in
        ``[0, num_classes)`` or -1 for "unknown". None (the default): the data set's own class labels."""
        return None

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of extra networks (returned after G's and D's by ``optimizers()``)."""
        return []

    def prepare(self, datamodule: Any) -> str | None:
        """One-off work on the training data shared by every run of this configuration (e.g. pre-training
        part of the model), cached by the variant; returns where the result is, for the log. None: nothing to do."""
        return None

    def preparation_missing(self, datamodule: Any) -> str | None:
        """Why training cannot start before ``prepare`` runs (its cached result does not exist), else None."""
        return None

    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        """One clear ``ValueError`` if G's samples or D's inputs do not have the data's ``sample_shape``."""
        check_shapes(self.generator, self.discriminator, sample_shape, self.device,
                     getattr(self.generator, "num_classes", None), getattr(self.discriminator, "num_classes", None))

    # ----------------------------------------------------------------- sampling
    def sample_z(self, n: int, truncation: float | None = None) -> Tensor:
        """``n`` latents from N(0, I), or from N(0, I) truncated to [-truncation, truncation] (BigGAN's truncation
        trick, ``repro.latents.truncated_normal``), in the model's dtype: outside a training step (callbacks,
        evaluation) torch's default dtype is float32 even when the nets are float64 (``trainer.precision: 64-true``
        sets float64 as the default only inside steps)."""
        if truncation is None:
            return self.sample_noise(lambda m: torch.randn(m, self.z_dim, device=self.device, dtype=self.dtype), n)
        return self.sample_noise(
            lambda m: truncated_normal((m, self.z_dim), truncation, self.device, dtype=self.dtype), n)

    def sample_noise(self, draw: Callable[[int], Tensor], n: int) -> Tensor:
        """``draw(n)``: random values for ``n`` samples. Every random draw of a training step goes through
        here, so a seed ensemble (``repro.ensemble``) can take each member's share from its own stream."""
        return draw(n)

    def batch_mean(self, values: Tensor) -> Tensor:
        """A loss term from per-sample ``values``: their mean (a seed ensemble keeps one mean per member)."""
        return values.mean()

    @torch.no_grad()
    def sample(self, n: int | None = None, z: Tensor | None = None, ema: bool = True, y: Tensor | None = None) -> Tensor:
        """Samples in eval mode from the EMA generator (if any and ``ema``) or G; ``z`` defaults to fresh draws.
        A class-conditional model samples class ``y[i]`` for sample i (default: uniformly drawn labels)."""
        net = self.generator_ema if (ema and self.generator_ema is not None) else self.generator
        if net is self.generator_ema and self._ema_stats_version != self._ema_version:
            standing_statistics(net, self.z_dim, self.device, n_batches=self.hparams.ema_standing_batches,
                                num_classes=self.num_classes, dtype=self.dtype)
            self._ema_stats_version = self._ema_version
        if z is None:
            z = self.sample_z(n if n is not None else (len(y) if y is not None else len(self.fixed_z)))
        if self.num_classes is None and y is not None:
            raise ValueError("sample: labels y given to a model without num_classes")
        if self.num_classes is not None:
            y = torch.randint(self.num_classes, (len(z),), device=self.device) if y is None else y.to(self.device)
            if y.shape != (len(z),) or y.dtype.is_floating_point or not 0 <= int(y.min()) <= int(y.max()) < self.num_classes:
                raise ValueError(f"sample: y must be {len(z)} integer labels in [0, {self.num_classes})")
        was_training = net.training
        net.eval()
        out = self.generate(z, y, net)
        net.train(was_training)
        return out

    def sample_grid(self) -> Tensor:
        """Samples of the fixed latent batch (sample grids); labels 0, 1, ..., K-1, 0, ... for a conditional model."""
        if self.num_classes is None:
            return self.sample(z=self.fixed_z)
        return self.sample(z=self.fixed_z, y=torch.arange(len(self.fixed_z), device=self.device) % self.num_classes)

    def update_ema(self) -> None:
        """Move the EMA generator towards G (weight ``1 - ema_decay`` on G's parameters; a copy of G before
        generator update ``ema_start``); no-op without EMA."""
        if self.generator_ema is None:
            return
        lerp_ema(self.generator_ema, self.generator, decay_at(self.global_step, self.ema_decay, self.hparams.ema_start))
        self._ema_version += 1  # BN statistics are re-estimated before the next EMA sample

    # ----------------------------------------------------------------- the players' losses
    @contextlib.contextmanager
    def frozen_discriminator(self) -> Iterator[None]:
        """D's parameters take no gradient inside: only input gradients flow through D (G's step, TAN's lens)."""
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def discriminator_loss(self, real: Tensor, fake: Tensor, y: Tensor | None = None,
                           y_fake: Tensor | None = None) -> Tensor:
        """D's objective plus its regularizers on a real batch and (detached) fakes (labels ``y``, ``y_fake``)."""
        real_in = self.real_input(real)
        loss = self.objective.d_loss(self.discriminate(real_in, **_y(y)), self.discriminate(fake, **_y(y_fake)))
        return self.add_regularizers(loss, "d", real_in, fake)

    def generator_loss(self, real: Tensor, z: Tensor, fake: Tensor, y: Tensor | None = None,
                       y_fake: Tensor | None = None) -> Tensor:
        """G's objective plus its regularizers for ``fake = G(z, y_fake)``, D frozen. D's output on ``real``
        (labels ``y``) is computed only when the objective compares real and fake (``g_needs_real``)."""
        with self.frozen_discriminator():
            real_out = (self.discriminate(self.real_input(real), **_y(y)).detach() if self.objective.g_needs_real
                        else None)
            loss = self.objective.g_loss(self.discriminate(fake, **_y(y_fake)), real_out)
            return self.add_regularizers(loss, "g", z, fake)

    def add_regularizers(self, loss: Tensor, player: Literal["d", "g"], a: Tensor, b: Tensor) -> Tensor:
        """``loss`` plus ``player``'s regularizers, called as ``reg(self, a, b)`` (D: real as D sees it and fakes;
        G: z and G(z)). Each term is also kept, detached and on the device, as ``<player>_reg/<name>``
        (``repro.regularizers.term_names``); ``training_step`` logs it beside the losses."""
        regs = self.d_regularizers if player == "d" else self.g_regularizers
        for name, reg in zip(term_names(regs), regs):
            term = reg(self, a, b)
            self._terms[f"{player}_reg/{name}"] = term.detach()
            loss = loss + term
        return loss

    # ----------------------------------------------------------------- the loop
    def on_fit_start(self) -> None:
        self._lean_steps = distributed.wrappers_idle(self)
        if self.hparams.compile_nets:
            if self.d_regularizers or type(self).discriminate is not GANModule.discriminate:
                raise ValueError(
                    f"model.compile_nets: {type(self).__name__} differentiates D twice (gradient penalty or "
                    "normalization), which torch.compile does not support; set compile_nets: false"
                )
            self.generator.compile()
            self.discriminator.compile()

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """The one backward of every update (D, G, a variant's extra networks): plain ``loss.backward()``
        when Lightning's wrapper would only call unused hooks, else Lightning's with DDP's reducer off
        (``distributed.backward_sync_blocked``; ``step_uncounted`` / ``step_counted`` sync the gradients)."""
        if self._lean_steps:
            loss.backward()
            return
        with distributed.backward_sync_blocked(self.trainer.strategy):
            super().manual_backward(loss, *args, **kwargs)

    def step_uncounted(self, optimizer: Any) -> None:
        """Step an optimizer through the strategy (precision, DDP) without advancing ``global_step``
        (directly when the strategy's wrapper would only call unused hooks)."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        distributed.sync_gradients(optimizer, self.world_size)
        if self._lean_steps:
            optimizer.step()
        else:
            self.trainer.strategy.optimizer_step(optimizer, do_nothing_closure)

    def step_counted(self, opt_g: Any) -> None:
        """Step G's (Lightning-wrapped) optimizer: one generator update, counted in ``global_step``."""
        distributed.sync_gradients(opt_g, self.world_size)
        opt_g.step()

    def draw_fakes(self, n: int) -> Fakes:
        """``n`` fresh latents (with labels: of uniformly drawn classes) and G's output on them, with its graph."""
        z = self.sample_z(n)
        y_fake = self.sample_labels(n)
        return Fakes(z, self.generate(z, y_fake), y_fake)

    def d_step(self, real: Tensor, opt_d: Any, y: Tensor | None = None, fakes: Fakes | None = None) -> Tensor:
        """One D update against ``fakes`` (detached; default: fresh ones from ``d_fakes``, with labels of uniformly
        drawn classes); ``y``: ``real``'s labels."""
        if fakes is None:
            y_fake = self.sample_labels(len(real))
            fake = self.d_fakes(len(real), **_y(y_fake))
        else:
            y_fake, fake = fakes.y, fakes.x.detach()
        loss = self.discriminator_loss(real, fake, **_y(y), **_y(y_fake, "y_fake"))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.step_uncounted(opt_d)
        self.after_d_step(real, fake, **_y(y), **_y(y_fake, "y_fake"))
        return loss.detach()

    def g_step(self, real: Tensor, opt_g: Any, y: Tensor | None = None, fakes: Fakes | None = None) -> Tensor:
        """One G update on ``fakes`` (default: fresh ones, ``g_batch_size`` of them, default ``len(real)``; with
        labels, of uniformly drawn classes); ``real`` (labels ``y``) is the iteration's last real batch, for
        objectives that compare real and fake."""
        if fakes is None:
            fakes = self.draw_fakes(self.g_batch_size or len(real))
        loss = self.generator_loss(real, fakes.z, fakes.x, **_y(y), **_y(fakes.y, "y_fake"))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.step_counted(opt_g)
        return loss.detach()

    def simultaneous_step(self, real: Tensor, opt_d: Any, opt_g: Any, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """D and G updated from the same fakes, both gradients taken before either player steps."""
        fakes = self.draw_fakes(len(real))
        fake = fakes.x
        labels = {**_y(y), **_y(fakes.y, "y_fake")}
        d_loss = self.discriminator_loss(real, fake.detach(), **labels)
        g_loss = self.generator_loss(real, fakes.z, fake, **labels)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self.manual_backward(g_loss)
        self.step_uncounted(opt_d)
        self.step_counted(opt_g)
        self.after_d_step(real, fake.detach(), **labels)
        return d_loss.detach(), g_loss.detach()

    def training_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()[:2]
        x, y = self.split_batch(batch)
        self._terms = {}
        if self.hparams.updates == "simultaneous":
            d_loss, g_loss = self.simultaneous_step(x, opt_d, opt_g, **_y(y))
            d_terms: dict[str, Tensor] = {}
        else:
            reals = x.chunk(self.n_dis)
            labels = [None] * len(reals) if y is None else y.chunk(self.n_dis)
            d_steps = []  # each D step's loss and regularizer terms, averaged over the steps as d_loss
            shared: dict[str, Fakes] = {}  # updates: shared_z: the last D step's fakes, for the G step
            for k, (real, y_k) in enumerate(zip(reals, labels)):
                if self.hparams.updates == "shared_z" and k == len(reals) - 1:
                    shared = {"fakes": self.draw_fakes(len(real))}
                d_steps.append({"d_loss": self.d_step(real, opt_d, **_y(y_k), **shared), **self._terms})
            d_terms = {key: torch.stack([s[key] for s in d_steps]).mean(0) for key in d_steps[0]}
            d_loss = d_terms.pop("d_loss")
            g_loss = self.g_step(reals[-1], opt_g, **_y(labels[-1]), **shared)
        distributed.broadcast_buffers(self, self.world_size)
        self.update_ema()
        schedulers = self.lr_schedulers()
        if schedulers:
            for s in schedulers if isinstance(schedulers, list) else [schedulers]:
                s.step()
        terms = {**self._terms, **d_terms}  # G's terms and D's averaged over the D steps
        self._last = {"d_loss": d_loss, "g_loss": g_loss, **terms}
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({"train/d_loss": d_loss, "train/g_loss": g_loss}, prog_bar=True)
            if terms:  # not on the progress bar
                self.log_dict({f"train/{k}": v for k, v in terms.items()})

    # ----------------------------------------------------------------- optimizers, checkpoints
    @property
    def last_losses(self) -> dict[str, Tensor]:
        """The last generator iteration's losses (``d_loss``: mean over its D steps, ``g_loss``) and regularizer
        terms (``d_reg/<name>``: mean over the D steps, ``g_reg/<name>``), on the device."""
        return dict(self._last)

    def make_optimizer(self, params: Any, lr: float, betas: Betas) -> torch.optim.Optimizer:
        """The configured optimizer (``optimizer``: Adam with ``betas``, or RMSprop) over ``params``.

        Adam (Kingma & Ba 2015, Alg. 1) runs as PyTorch's fused kernel where it has one (float tensors on
        CPU or CUDA): one pass per tensor instead of about ten, 3x faster on CPU for the PacGAN nets. It
        rounds some elements differently from the per-tensor loop (by an ulp: its own order of operations),
        no less accurately (tests/test_speed_paths.py)."""
        if self.hparams.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        params = list(params)
        fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True if fusable else None)

    def check_schedule(self, max_steps: int | None) -> None:
        """Raise ``ValueError`` if the learning-rate schedule needs a step budget the trainer lacks."""
        if self.hparams.lr_decay == "linear" and (max_steps is None or max_steps <= 0):
            raise ValueError(
                f"model.lr_decay: linear needs trainer.max_steps > 0 (the number of generator updates), got {max_steps}"
            )

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizers = [
            self.make_optimizer(self.generator.parameters(), hp.lr_g, tuple(hp.betas_g)),
            self.make_optimizer(self.discriminator.parameters(), hp.lr_d, tuple(hp.betas_d)),
            *self.extra_optimizers(),
        ]
        if hp.lr_decay == "none":
            return optimizers
        self.check_schedule(self.trainer.max_steps)
        total = self.trainer.max_steps
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(o, linear_lr_decay(total)) for o in optimizers[:2]]

    def setup(self, stage: str) -> None:
        """Tell the data module how many real batches one training step takes (one way: the data module
        never reads the model), and seed this rank's RNG stream (``distributed.seed_rank``)."""
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "set_batches_per_step"):
            datamodule.set_batches_per_step(1 if self.hparams.updates == "simultaneous" else self.n_dis)
            datamodule.set_labelled(self.num_classes, self.training_labels(datamodule))
        elif self.num_classes is not None:
            raise ValueError("model.num_classes needs repro's GANDataModule (it serves the labels)")
        distributed.seed_rank(self.trainer.world_size, self.trainer.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every rank runs this hook; the gathered states let each rank resume its own stream
        checkpoint["repro_rng"] = distributed.gather_rng_states(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "repro_rng" not in checkpoint:
            raise ValueError("checkpoint was not written by repro (no 'repro_rng' entry); cannot resume from it")
        distributed.restore_rng_state(checkpoint["repro_rng"], self.trainer.world_size, self.trainer.global_rank,
                                      self.device)

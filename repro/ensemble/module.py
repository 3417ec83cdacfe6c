"""A seed ensemble as one GANModule: K runs of one config, stacked, trained by the variant's own loop.

``make_ensemble(template, members, ...)`` rewrites ``template`` (any supported variant) in place: every
layer becomes an ensemble layer stacked from the K member models (each built under its own seed), and
its class becomes ``Ensemble<Variant>``, which changes only what the base loop's hooks see:

- batches are member-major (K*B, ...): the real batch of each D step is the single run's batch for
  every member (its order depends on ``data.seed``, not on the run seed, so the K separate runs see the
  same order too); ``sample_noise`` draws each member's share from that member's own RNG stream (the
  single run's global stream under its seed), so latents, gradient-penalty and Jacobian-clamping noise
  equal the single runs';
- the objective and ``batch_mean`` give one loss per member, shape (K,); backward runs on their **sum**,
  so plain autograd gives each member exactly its own gradient, and Adam / RMSprop (element-wise) over
  the stacked tensors are K independent optimizers. Nothing reduces across members;
- EMA (``torch._foreach_lerp_``), weight clipping and learning-rate schedules are element-wise or equal
  for all members, so the variant's code for them runs unchanged;
- logged losses go to each member's own loggers (and their mean to the ensemble's).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from repro.ensemble.layers import EnsembleError, is_stackable, stack_layers
from repro.losses import Objective
from repro.regularizers import GradientPenalty, JacobianClamping
from repro.variants import GNGAN, LSGAN, NSGAN, SNGAN, TAN, WGAN, WGANGP, GANModule, RelativisticGAN, VanillaGAN

__all__ = ["make_ensemble", "check_supported", "EnsembleMixin", "SUPPORTED_VARIANTS", "SUPPORTED_REGULARIZERS"]

# Variants whose loop, hooks and losses were checked against single runs (tests/test_ensemble.py);
# JacobianClamped(X) of any of them is supported too (it only adds a regularizer).
# RelativisticGAN covers RaSGAN and the other relativistic losses (one objective path, vmapped per member).
SUPPORTED_VARIANTS: tuple[type[GANModule], ...] = (VanillaGAN, NSGAN, LSGAN, RelativisticGAN, WGAN, WGANGP, SNGAN, GNGAN,
                                                   TAN)
# Regularizers that draw their noise through ``sample_noise`` and reduce with ``batch_mean``.
SUPPORTED_REGULARIZERS = (GradientPenalty, JacobianClamping)
_RANDOM_MODULES = (nn.modules.dropout._DropoutNd,)


def check_supported(model: GANModule) -> None:
    """Raise ``EnsembleError`` naming the reason if ``model`` cannot be trained as a seed ensemble."""
    name = type(model).__name__
    if getattr(model, "num_classes", None) is not None:
        raise EnsembleError("ensemble: class-conditional training (model.num_classes) has no seed-ensemble version "
                            "(labels and class embeddings are not stacked per member); train its seeds separately")
    if not isinstance(model, SUPPORTED_VARIANTS):
        supported = ", ".join(c.__name__ for c in SUPPORTED_VARIANTS)
        reason = {"RFGAN": "its frozen autoencoder is loaded per run in setup() and its encoder is held outside "
                           "the module tree"}.get(name, "it has not been checked against single runs")
        raise EnsembleError(f"ensemble: {name} cannot run as a seed ensemble ({reason}); supported variants: "
                            f"{supported} and JacobianClamped versions of them; train its seeds separately")
    for reg in [*model.d_regularizers, *model.g_regularizers]:
        if not isinstance(reg, SUPPORTED_REGULARIZERS):
            raise EnsembleError(
                f"ensemble: regularizer {type(reg).__name__} is not supported in a seed ensemble (supported: "
                f"{', '.join(c.__name__ for c in SUPPORTED_REGULARIZERS)}: per-sample terms averaged per member); "
                "train its seeds separately")
    if model.hparams.get("compile_nets"):
        raise EnsembleError("ensemble: model.compile_nets is not supported in a seed ensemble; set compile_nets: false")
    if model.hparams.get("channels_last"):  # its stacked layers are built anew, in torch's default layout
        raise EnsembleError("ensemble: model.channels_last is not supported in a seed ensemble; set channels_last: false")
    for path, module in model.named_modules():
        if getattr(module, "couples_batch", False):  # e.g. minibatch discrimination: o(x_i) sums over the batch
            raise EnsembleError(f"ensemble: {path} ({type(module).__name__}) compares the samples of a batch, which in "
                                "a seed ensemble would mix the members' samples; train its seeds separately")
        if isinstance(module, _RANDOM_MODULES):
            raise EnsembleError(f"ensemble: {path} ({type(module).__name__}) draws random numbers inside the network, "
                                "which a seed ensemble cannot give each member from its own stream")


class MemberObjective:
    """An objective evaluated per member on member-major outputs: (K*B,) -> (K,) losses."""

    def __init__(self, objective: Objective, members: int):
        self.base, self.members = objective, members
        self.g_needs_real = objective.g_needs_real
        self._d = torch.func.vmap(objective.d_loss)
        self._g = torch.func.vmap(objective.generator)

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return self._d(real.view(self.members, -1), fake.view(self.members, -1))

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        per_member = [fake.view(self.members, -1)]
        if self.g_needs_real:
            if real is None:
                raise ValueError("this objective's generator loss compares fakes with real data: pass real_out")
            per_member.append(real.view(self.members, -1))
        return self._g(*per_member)


def _device_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


class EnsembleMixin:
    """Placed before the variant's class: the hooks of ``GANModule`` that differ for a seed ensemble."""

    members: int
    seeds: list[int]
    member_models: tuple[GANModule, ...]
    member_loggers: list[list[Any]]
    member_rows: dict[tuple[int, int], dict[str, float]]
    _member_epoch_rows: dict[int, dict[str, float]]
    _member_rng: list[Tensor]
    _member_rng_device: str

    # ------------------------------------------------------------ randomness and reductions
    def sample_noise(self, draw: Callable[[int], Tensor], n: int) -> Tensor:
        """Member k's n/K values from member k's stream, as the single run with seed k draws them."""
        k = self.members
        if n % k:
            raise RuntimeError(f"ensemble: a draw of {n} values does not split over {k} members")
        gen = _device_generator(self.device)
        if self._member_rng_device != self.device.type:  # first draw on an accelerator: seed its streams
            self._member_rng = [torch.Generator(self.device).manual_seed(s).get_state() for s in self.seeds]
            self._member_rng_device = self.device.type
        saved = gen.get_state()
        parts = []
        try:
            for i in range(k):
                gen.set_state(self._member_rng[i])
                parts.append(draw(n // k))
                self._member_rng[i] = gen.get_state()
        finally:
            gen.set_state(saved)
        return torch.cat(parts)

    def batch_mean(self, values: Tensor) -> Tensor:
        return values.view(self.members, -1).mean(1)

    def backward_loss(self, loss: Tensor) -> None:
        super().backward_loss(loss.sum())  # type: ignore[misc]

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        super().manual_backward(loss.sum(), *args, **kwargs)  # type: ignore[misc]

    # ------------------------------------------------------------ the step
    def member_batch(self, batch: Tensor) -> Tensor:
        """The single run's real batch (n_dis chunks of B) for every member: n_dis chunks of (K*B)."""
        chunks = batch.view(self.n_dis, 1, -1, *batch.shape[1:])  # type: ignore[attr-defined]
        return chunks.expand(-1, self.members, *chunks.shape[2:]).reshape(-1, *batch.shape[1:])

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        return super().training_step(self.member_batch(batch), batch_idx)  # type: ignore[misc]

    def log_dict(self, dictionary: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """Member k's values (entry k of a (K,) tensor; a scalar is every member's) into member k's row of
        this step (``flush_member_logs`` writes it); the members' mean to the ensemble's own loggers."""
        trainer = self.trainer  # type: ignore[attr-defined]
        # the generator updates done after this batch: the step a single run's rows get (loggers.GeneratorStepStamp)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
        values = {key: torch.as_tensor(v).detach().double().cpu() for key, v in dictionary.items()}
        for i in range(self.members):
            row = self.member_rows.setdefault((step, i), {"epoch": trainer.current_epoch})
            row.update({key: float(v[i] if v.dim() else v) for key, v in values.items()})
        super().log_dict({key: v.mean() for key, v in values.items()}, *args, **kwargs)  # type: ignore[misc]

    def flush_member_logs(self) -> None:
        """Write the rows ``log_dict`` collected to each member's loggers. As Lightning does for a single run,
        a value logged earlier in the same epoch and not this step is repeated (e.g. TAN's lens values
        after the lens is removed)."""
        for (step, i), row in sorted(self.member_rows.items()):
            previous = self._member_epoch_rows.get(i, {})
            if previous.get("epoch") == row["epoch"]:
                row = {**previous, **row}
            self._member_epoch_rows[i] = row
            for logger in self.member_loggers[i]:
                logger.log_metrics(row, step=step)
        self.member_rows.clear()

    # ------------------------------------------------------------ members' views and checkpoints
    @torch.no_grad()
    def bind_members(self) -> None:
        """Make every member model's parameters and buffers views of its slice of the stacked ones (on this
        module's device and dtype), so callbacks that read a member see its current state without copies."""
        stacked = self.state_dict(keep_vars=True)  # type: ignore[attr-defined]
        dtype = self.fixed_z.dtype  # type: ignore[attr-defined]
        for i, model in enumerate(self.member_models):
            model.to(device=self.device, dtype=dtype)
            for key, mine in model.state_dict(keep_vars=True).items():
                big = stacked[key]
                if tuple(big.shape) != (self.members, *mine.shape):
                    continue  # shared (not stacked), e.g. the fixed latent batch
                prefix, _, name = key.rpartition(".")
                owner = model.get_submodule(prefix)
                if name in owner._parameters:
                    owner._parameters[name] = nn.Parameter(big.detach()[i], requires_grad=False)
                else:
                    owner._buffers[name] = big.detach()[i]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["repro_ensemble"] = {"seeds": list(self.seeds), "rng": list(self._member_rng),
                                        "rng_device": self._member_rng_device}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        saved = checkpoint.get("repro_ensemble")
        if saved is None or list(saved["seeds"]) != list(self.seeds):
            raise EnsembleError(f"ckpt_path: the checkpoint is not of an ensemble of seeds {self.seeds} "
                                f"(it has {None if saved is None else saved['seeds']})")
        self._member_rng = [s.clone() for s in saved["rng"]]
        self._member_rng_device = saved["rng_device"]


@functools.cache
def ensemble_class(variant: type[GANModule]) -> type[GANModule]:
    """``Ensemble<Variant>``: the variant with ``EnsembleMixin``'s hooks."""
    return type(f"Ensemble{variant.__name__}", (EnsembleMixin, variant), {"__module__": __name__})


def _replace_layers(parent: nn.Module, members: Sequence[nn.Module], path: str = "") -> None:
    """Swap every layer under ``parent`` for the ensemble layer stacked from ``members``' layers at that path."""
    for name, child in list(parent.named_children()):
        where = f"{path}{name}"
        if name == "parametrizations":
            continue  # stacked with their layer
        if is_stackable(child):
            setattr(parent, name, stack_layers([m.get_submodule(where) for m in members]))
            continue
        own = [n for n, _ in child.named_parameters(recurse=False)] + [n for n, _ in child.named_buffers(recurse=False)]
        if own:
            raise EnsembleError(f"ensemble: {where} ({type(child).__name__}) holds its own tensors ({', '.join(own)}) "
                                "and has no ensemble version; supported layers: Linear, Conv2d, ConvTranspose2d, "
                                "BatchNorm1d/2d, repro's ShiftOnlyNorm")
        _replace_layers(child, members, where + ".")


def make_ensemble(template: GANModule, members: Sequence[GANModule], seeds: Sequence[int],
                  rng_states: Sequence[Tensor]) -> GANModule:
    """Turn ``template`` (a model of the same config) into the ensemble of ``members``: member k's weights,
    buffers and EMA are ``members[k]``'s, its random stream continues from ``rng_states[k]``.

    Raises ``EnsembleError`` if the variant, a regularizer or a layer has no ensemble version."""
    for model in (template, *members):
        check_supported(model)
    if not members or len(members) != len(seeds) or len(seeds) != len(rng_states):
        raise EnsembleError("ensemble: need one seed and one RNG state per member")
    old = template.state_dict(keep_vars=True)
    _replace_layers(template, members)
    new = template.state_dict(keep_vars=True)
    if set(old) != set(new):
        raise EnsembleError(f"ensemble: stacking changed the state keys: {sorted(set(old) ^ set(new))[:3]}")
    remap = {id(old[key]): new[key] for key in old}
    for attr, value in list(vars(template).items()):  # e.g. WGAN's list of critic parameters to clip
        if isinstance(value, (list, tuple)) and any(id(v) in remap for v in value):
            setattr(template, attr, type(value)(remap.get(id(v), v) for v in value))
    template.__class__ = ensemble_class(type(template))
    k = len(members)
    ens: Any = template
    ens.members, ens.seeds = k, list(seeds)
    ens.member_models = tuple(members)  # a tuple: not registered as submodules
    ens.member_loggers, ens.member_rows, ens._member_epoch_rows = [[] for _ in members], {}, {}
    ens._member_rng, ens._member_rng_device = [s.clone() for s in rng_states], "cpu"
    ens.objective = MemberObjective(template.objective, k)
    if template.g_batch_size is not None:
        ens.g_batch_size = template.g_batch_size * k
    return template

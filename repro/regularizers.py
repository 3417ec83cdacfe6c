"""Terms added to a player's loss, composable with any variant.

A regularizer is called as ``reg(module, a, b)``: for D terms ``(real, fake)`` as D sees them, for
G terms ``(z, fake)``. It returns a scalar to add to that player's loss. ``module`` is anything with
the ``Players`` attributes (a ``GANModule`` is one); this module imports no variant. Each term is logged on its own
as ``train/d_reg/<name>`` / ``train/g_reg/<name>`` (``term_names``).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Protocol, Sequence

import torch
from torch import Tensor, nn

from repro.normalization import raw_weight, weight_layers

__all__ = ["Players", "Regularizer", "term_names", "GradientPenalty", "OrthonormalRegularizer",
           "ModifiedOrthogonalRegularizer", "JacobianClamping", "HistoricalAveraging"]


class Players(Protocol):
    """What a regularizer may use of the module it regularizes."""

    generator: nn.Module
    discriminator: nn.Module

    def discriminate(self, x: Tensor) -> Tensor:
        """D's output as the variant defines it (e.g. gradient-normalized)."""
        ...

    def sample_noise(self, draw: Callable[[int], Tensor], n: int) -> Tensor:
        """``draw(n)``: the random values of ``n`` samples (a seed ensemble draws per member)."""
        ...

    def batch_mean(self, values: Tensor) -> Tensor:
        """The mean of per-sample ``values`` (a seed ensemble: one per member)."""
        ...


class Regularizer:
    """Base class: ``__call__(module, a, b) -> scalar tensor``. ``runs_nets``: it runs G or D on inputs of its
    own (interpolates, perturbed latents), which have no class labels (class-conditional models refuse it).
    ``per_sample_d_gradient``: it takes grad_x D(x_i) per sample (a D that couples the samples is refused).
    ``name``: the term's short, stable name in the logs (each subclass sets its own)."""

    name: ClassVar[str] = "regularizer"
    runs_nets = False
    per_sample_d_gradient = False

    def __call__(self, module: Players, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError


def term_names(regularizers: Sequence[Regularizer]) -> list[str]:
    """One player's regularizers' log names: each one's ``name``, a repeated name numbered from its second use
    on (``gradient_penalty``, ``gradient_penalty_2``)."""
    uses: dict[str, int] = {}
    names = []
    for reg in regularizers:
        uses[reg.name] = uses.get(reg.name, 0) + 1
        names.append(reg.name if uses[reg.name] == 1 else f"{reg.name}_{uses[reg.name]}")
    return names


class GradientPenalty(Regularizer):
    """Gulrajani et al. 2017, eq. 3: weight * E[(||grad_x D(x_hat)|| - 1)^2] at random interpolates
    x_hat = eps * x + (1 - eps) * x_fake, eps ~ U[0, 1] per sample. The norm is per input, so D must not couple
    the samples of a batch (the paper's Sec. 4, "No critic batch normalization"; layer norm is its substitute)."""

    name = "gradient_penalty"
    runs_nets = True
    per_sample_d_gradient = True

    def __init__(self, weight: float = 10.0, center: float = 1.0):
        if weight < 0:
            raise ValueError(f"GradientPenalty.weight must be >= 0, got {weight}")
        self.weight, self.center = weight, center

    def __call__(self, module: Players, real: Tensor, fake: Tensor) -> Tensor:
        shape = (1,) * (real.dim() - 1)
        eps = module.sample_noise(lambda n: torch.rand((n, *shape), device=real.device, dtype=real.dtype), len(real))
        x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        out = module.discriminate(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(dim=1)
        return self.weight * module.batch_mean((norm - self.center).square())


class OrthonormalRegularizer(Regularizer):
    """Brock et al. 2016 (the SN paper's comparator, Miyato et al. 2018, Sec. 4):
    weight * sum over D's weight layers of ||G - I||_F^2, G the Gram matrix of W reshaped to (out, in*kh*kw).

    G is the smaller Gram (W W^T if out <= in*kh*kw, else W^T W), the one that can equal I, so the term
    is zero exactly when the rows (or columns) are orthonormal. Parametrized layers are regularized in
    their raw weight. The SN paper does not state the coefficient; 1.0 is this project's default.
    """

    name = "orthonormal"

    def __init__(self, weight: float = 1.0):
        if weight < 0:
            raise ValueError(f"OrthonormalRegularizer.weight must be >= 0, got {weight}")
        self.weight = weight

    @staticmethod
    def penalty(w: Tensor) -> Tensor:
        """||G - I||_F^2 for one weight tensor."""
        w = w.flatten(1)
        gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
        return (gram - torch.eye(len(gram), device=w.device, dtype=w.dtype)).square().sum()

    def __call__(self, module: Players, real: Tensor, fake: Tensor) -> Tensor:
        layers = weight_layers(module.discriminator)
        return self.weight * torch.stack([self.penalty(raw_weight(m)) for m in layers]).sum()


class ModifiedOrthogonalRegularizer(Regularizer):
    """Brock et al. 2019 (BigGAN), Sec. 3.1: R_beta(W) = beta * ||W W^T * (1 - I)||_F^2 summed over G's weights,
    W reshaped to (out, in*kh*kw): only the rows' pairwise inner products are pushed to 0, not their norms to 1.

    A G term (put it in ``g_regularizers``). The weights are those BigGAN-PyTorch's ``utils.ortho`` takes: every
    generator parameter with >= 2 dimensions (linear, conv, and embedding tables; for a spectrally normalized
    layer its raw weight) except those under ``exclude`` (BigGAN-PyTorch blacklists the shared class embedding,
    G's ``shared``). BigGAN-PyTorch adds ``strength * 2 (W W^T * (1 - I)) W`` to the gradient, the gradient of
    (strength / 2) * ||.||^2, so its ``--G_ortho 1e-4`` equals ``weight: 5e-5`` here; the paper's beta is 1e-4.
    """

    name = "modified_orthogonal"

    def __init__(self, weight: float = 1e-4, exclude: tuple[str, ...] = ("shared",)):
        if weight < 0:
            raise ValueError(f"ModifiedOrthogonalRegularizer.weight must be >= 0, got {weight}")
        self.weight, self.exclude = weight, tuple(exclude)

    @staticmethod
    def penalty(w: Tensor) -> Tensor:
        """||W W^T * (1 - I)||_F^2 for one weight tensor (rows: its first dimension)."""
        w = w.flatten(1)
        gram = w @ w.t()
        return (gram - torch.diag_embed(gram.diagonal())).square().sum()

    def weights(self, generator: nn.Module) -> list[Tensor]:
        """The regularized parameters of ``generator``: >= 2 dimensions, not under an ``exclude`` prefix."""
        skipped = tuple(f"{name}." for name in self.exclude)
        return [p for name, p in generator.named_parameters() if p.dim() >= 2 and not name.startswith(skipped)]

    def __call__(self, module: Players, z: Tensor, fake: Tensor) -> Tensor:
        weights = self.weights(module.generator)
        if not weights:
            raise ValueError("ModifiedOrthogonalRegularizer: model.generator has no weight with >= 2 dimensions")
        return self.weight * torch.stack([self.penalty(w) for w in weights]).sum()


class JacobianClamping(Regularizer):
    """Odena et al. 2018, Alg. 1: for z' = z + delta, delta ~ N(0, I) rescaled to norm ``eps``,
    Q = ||G(z) - G(z')|| / ||z - z'|| per sample; returns
    weight * mean[(max(Q, lambda_max) - lambda_max)^2 + (min(Q, lambda_min) - lambda_min)^2]
    (a G term: called with (z, G(z)); G(z') is one extra generator pass that G's gradient flows through)."""

    name = "jacobian_clamping"
    runs_nets = True

    def __init__(self, lambda_min: float = 1.0, lambda_max: float = 20.0, eps: float = 1.0, weight: float = 1.0):
        if not 0 <= lambda_min <= lambda_max:
            raise ValueError(f"JacobianClamping needs 0 <= lambda_min <= lambda_max, got {lambda_min}, {lambda_max}")
        if not eps > 0 or weight < 0:
            raise ValueError(f"JacobianClamping needs eps > 0 and weight >= 0, got eps={eps}, weight={weight}")
        self.lambda_min, self.lambda_max, self.eps, self.weight = lambda_min, lambda_max, eps, weight

    def ratio(self, generator: torch.nn.Module, z: Tensor, fake: Tensor, delta: Tensor | None = None) -> Tensor:
        """Q for each sample of the batch; ``delta`` is the N(0, I) draw (default: a fresh one)."""
        delta = torch.randn_like(z) if delta is None else delta
        delta = self.eps * delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (z.dim() - 1)))
        moved = generator(z + delta)
        return (fake - moved).flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)

    def __call__(self, module: Players, z: Tensor, fake: Tensor) -> Tensor:
        delta = module.sample_noise(lambda n: torch.randn((n, *z.shape[1:]), device=z.device, dtype=z.dtype), len(z))
        q = self.ratio(module.generator, z, fake, delta)
        l_max = (q.clamp_min(self.lambda_max) - self.lambda_max).square()
        l_min = (q.clamp_max(self.lambda_min) - self.lambda_min).square()
        return self.weight * module.batch_mean(l_max + l_min)


class HistoricalAveraging(nn.Module, Regularizer):
    """Salimans et al. 2016, Sec. 3.3: weight * ||theta - (1/t) sum_{i<=t} theta[i]||^2 added to a player's loss,
    theta[i] that player's parameters at its i-th update (the current one included, so the first term is 0).

    The paper's technique only: the released code (openai/improved-gan) does not use it, and the paper gives
    no coefficient (``weight`` 1.0 is this project's default). Put one instance in ``d_regularizers`` and / or
    one in ``g_regularizers``: the player is the one being updated (G's step freezes D), fixed at the first call.
    The running mean is a buffer of the module, saved in checkpoints (exact resume) and equal on all DDP ranks.
    """

    name = "historical_averaging"

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if weight < 0:
            raise ValueError(f"HistoricalAveraging.weight must be >= 0, got {weight}")
        self.weight = weight
        self.register_buffer("average", torch.zeros(0))  # flattened mean of the player's past parameters
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.player: str | None = None

    @staticmethod
    def _player(module: Players) -> str:
        trained = any(p.requires_grad for p in module.discriminator.parameters())
        return "discriminator" if trained else "generator"

    def __call__(self, module: Players, a: Tensor, b: Tensor) -> Tensor:
        player = self._player(module)
        if self.player is None:
            self.player = player
        elif player != self.player:
            raise ValueError("one HistoricalAveraging instance was used for both players; give each its own "
                             "(one in d_regularizers, one in g_regularizers)")
        theta = torch.cat([p.flatten() for p in getattr(module, player).parameters()])
        with torch.no_grad():
            if self.average.numel() != theta.numel():
                self.average = torch.zeros_like(theta)
            self.count += 1
            self.average += (theta.detach() - self.average) / self.count
        return self.weight * (theta - self.average).square().sum()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        saved = state_dict.get(prefix + "average")
        if saved is not None:  # the buffer's size is the player's parameter count, known once training started
            self.average = torch.zeros_like(saved, device=self.average.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

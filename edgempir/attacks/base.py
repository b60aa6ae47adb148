"""The attack base class: one contract for every attack, our own and torchattacks' wrappers.

``attack(model, x, y) -> x_adv``:

- ``model`` returns logits (or log-probabilities: the mean-softmax surrogate of an ensemble
  returns log mean softmax, which every loss here treats as logits);
- ``x`` are images in [0, 1], ``y`` class ids; untargeted;
- the result is always projected into the attack's ball around ``x`` (L-inf or L2) and into
  [0, 1], whatever the subclass did, so no attack can silently leave its threat model.

``decide`` (optional) gives the defence's real decision (e.g. the ensemble's vote) for a
batch; attacks that keep the best of several tries (PGD restarts) judge success with it, so
an adaptive attacker that knows the deployed combiner uses that knowledge.

Model parameters are frozen for the duration of a call: autograd then keeps no state for
weight gradients, which no attack needs (about 10-20% faster on the paper's CNNs).

``ids`` (optional) names the images of a batch (eval passes their test-set indices): every
random draw of an attack for image ``i`` then comes from a generator seeded by (seed,
attack, eps, draw, i), so an image's result does not depend on which other images share
its batch (the premise of sharding an evaluation over ranks, docs/DISTRIBUTED.md). Without
``ids`` an attack draws from one generator for the whole batch, as it always did. Attacks
whose result couples the images of a batch whatever the seeding (torchattacks' shared
random draws, CW's batch-wide early abort) say so with ``batch_coupled``.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from edgempir.errors import EdgempirError

NORMS = ("Linf", "L2")


class AttackError(EdgempirError):
    """An unknown attack, a bad parameter or an eps outside (0, 1]."""


Decide = Callable[[torch.Tensor], torch.Tensor]


def check_eps(eps: float, norm: str = "Linf", what: str = "eps") -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise AttackError(f"{what} {eps!r} is not a number; give e.g. 0.1 or 8/255") from None
    limit = 1.0 if norm == "Linf" else math.inf
    if not (value > 0 and value <= limit) or math.isnan(value):
        rng = "(0, 1]" if norm == "Linf" else "(0, inf)"
        raise AttackError(f"{what} {value:g} is outside {rng}: inputs live in [0, 1], so an "
                          f"{norm} radius must be in {rng}; give e.g. 0.1 or 8/255")
    return value


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration of an attack; restored after."""
    was_training = model.training
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)


def default_decide(model: nn.Module) -> Decide:
    def decide(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(dim=1)
    return decide


class Attack:
    """Base class. Subclasses set ``name``, ``norm``, ``defaults`` and implement ``perturb``."""

    name: ClassVar[str] = ""
    norm: ClassVar[str] = "Linf"
    #: True when the attack needs input gradients (white-box); False for query-only attacks
    white_box: ClassVar[bool] = True
    #: parameter name -> default; ``make_attack`` rejects anything else
    defaults: ClassVar[dict[str, Any]] = {}
    #: True when eps may be None (an unbounded attack such as the paper's CW-L2)
    eps_optional: ClassVar[bool] = False
    #: True when one image's result depends on the other images of its batch whatever the
    #: seeding (eval then runs such an attack on the same batches on any number of ranks)
    batch_coupled: bool = False
    #: a batch-coupled attack that must see batches of exactly this many images (the last
    #: one smaller) whatever ``--batch-size``: the reference ran it so
    batch_rows: int | None = None

    def __init__(self, eps: float | None = None, seed: int = 0, **params: Any):
        if eps is None and not self.eps_optional:
            raise AttackError(f"attack {self.name!r} needs an eps")
        self.eps = None if eps is None else check_eps(eps, self.norm, f"{self.name} eps")
        self.seed = int(seed)
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise AttackError(f"attack {self.name!r} has no parameter {unknown[0]!r}; its "
                              f"parameters are {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = {**self.defaults, **params}
        for key, value in self.params.items():
            setattr(self, key, value)
        self.ids: torch.Tensor | None = None   # the images of the current call (``__call__``)

    def describe(self) -> dict[str, Any]:
        """Everything that determines the attack's output, for reports and resume keys."""
        return {"name": self.name, "norm": self.norm, "eps": self.eps, "seed": self.seed,
                **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 decide: Decide | None = None, ids: torch.Tensor | None = None
                 ) -> torch.Tensor:
        if x.ndim != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"attack needs x [B, C, H, W] and y [B], got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if ids is not None and tuple(ids.shape) != (x.shape[0],):
            raise ValueError(f"ids must be [B], got {tuple(ids.shape)}")
        self.ids = None if ids is None else torch.as_tensor(ids).long()
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("attack inputs must be in [0, 1]")
        x = x.detach().float()
        y = y.detach().long()
        if x.shape[0] == 0:
            return x.clone()
        with frozen(model):
            x_adv = self.perturb(model, x, y, decide)
        return self.project(x, x_adv.detach())

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        """Return adversarial inputs; ``decide`` None means the model's own argmax."""
        raise NotImplementedError

    def uniform(self, shape: tuple[int, ...], rows: torch.Tensor | None, gen: torch.Generator,
                *draw) -> torch.Tensor:
        """U[0, 1) noise of ``shape`` for the batch rows ``rows`` (None: every row): per
        image from (seed, attack, eps, ``draw``, image id) when the call has ``ids``, else
        the next draw of the batch's generator ``gen``."""
        if self.ids is None:
            return torch.rand(shape, generator=gen)
        ids = self.ids if rows is None else self.ids[rows]
        return per_image_uniform(shape, ids, self.seed, self.name, self.eps, *draw)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Into the ball around ``x`` and into [0, 1] (a no-op for a well-behaved attack)."""
        return project(x, x_adv, self.eps, self.norm)


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float | None, norm: str) -> torch.Tensor:
    if eps is not None:
        delta = x_adv - x
        if norm == "Linf":
            delta = delta.clamp(-eps, eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (eps / norms).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1)))
            delta = delta * factor
        x_adv = x + delta
    return x_adv.clamp(0.0, 1.0)


def per_image_uniform(shape, ids: torch.Tensor, *key) -> torch.Tensor:
    """U[0, 1) noise of ``shape`` ([B, ...]) whose row j comes from a generator seeded by
    (``key``, ``ids[j]``) alone: the same for an image in any batch, on any rank."""
    out = torch.empty(tuple(shape))
    for j, image in enumerate(ids.tolist()):
        text = repr((*key, int(image))).encode()
        seed = int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1
        out[j] = torch.rand(tuple(shape[1:]), generator=torch.Generator().manual_seed(seed))
    return out

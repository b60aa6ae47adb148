"""L-inf PGD (Madry et al. 2018): sign-gradient steps on the cross-entropy, projected.

Our own implementation because it is the workhorse of both protocols and must be cheap: the
eps ball and [0, 1] are merged into one pair of per-pixel bounds computed once, every step is
one forward, one ``autograd.grad`` w.r.t. the input only (parameters are frozen by the base
class) and two in-place ops. Restarts re-run only the samples that the defence's decision
(``decide``: the real combiner when the caller knows it) still gets right.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from edgempir.attacks.base import Attack, Decide, default_decide


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input (sum: per-sample scale kept)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def sign_gradient_ascent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                         step_size: float, steps: int, start: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """``steps`` projected sign-gradient steps from ``start`` (default: ``x``)."""
    lo = (x - eps).clamp_(min=0.0)
    hi = (x + eps).clamp_(max=1.0)
    adv = x.clone() if start is None else start.clamp(min=lo, max=hi)
    for _ in range(steps):
        grad = input_gradient(model, adv, y)
        adv.add_(grad.sign_(), alpha=step_size).clamp_(min=lo, max=hi)
    return adv


class PGD(Attack):
    """L-inf PGD with a uniform random start and optional restarts.

    ``step_size`` None means ``rel_step * eps``.
    """

    name: ClassVar[str] = "pgd"
    norm: ClassVar[str] = "Linf"
    defaults: ClassVar[dict] = {"steps": 40, "step_size": None, "rel_step": 0.25, "random_start": True,
                "restarts": 1}

    def step(self) -> float:
        return float(self.step_size) if self.step_size is not None else self.rel_step * self.eps

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        decide = decide or default_decide(model)
        gen = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        todo = torch.arange(x.shape[0])
        for r in range(max(1, int(self.restarts))):
            xs, ys = x[todo], y[todo]
            start = None
            if self.random_start:
                noise = self.uniform(xs.shape, todo, gen, "restart", r)
                start = xs + (2 * noise - 1) * self.eps
            adv = sign_gradient_ascent(model, xs, ys, self.eps, self.step(), int(self.steps),
                                       start)
            best[todo] = adv
            if r + 1 < self.restarts:
                todo = todo[decide(adv) == ys]
                if todo.numel() == 0:
                    break
        return best

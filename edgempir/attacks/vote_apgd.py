"""Vote-APGD: the attack of ``vote-pgd`` with APGD's step-size schedule (Croce & Hein 2020).

Same coalitions, targets and clipped margin loss (``_vote``); each search is APGD: step
``2 eps``, momentum 0.75, and at the checkpoints ``0, 0.22, ...`` of the budget the step is
halved and the search restarts from its best point when fewer than ``rho`` of the steps
since the last checkpoint lowered the loss, or when the step was not halved at the last
checkpoint and the best loss has not moved since (Algorithm 1's two conditions; until
2026-12-01 the second ignored the last checkpoint's halving, and a restart zeroed the
momentum). Iterates are judged by the real decision as in ``vote-pgd``.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from edgempir.attacks._vote import aimed_search
from edgempir.attacks.base import Attack, Decide
from edgempir.attacks.vote_pgd import Keeper, tracked_step


def checkpoints(steps: int) -> set[int]:
    """APGD's checkpoints (Croce & Hein 2020, section 3.2): ``ceil(p_j * steps)`` with
    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Each product is
    rounded to 9 decimals before the ceiling: float sums land a hair above the exact value
    (0.41 + 0.16 gives 0.5700000000000001, whose ceiling at 100 steps would be 58, not 57)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(round(q * steps, 9)) for q in p[1:] if round(q, 9) <= 1} - {0}


def apgd_descent(logits_fn, loss_fn, success, x, eps: float, steps: int, rho: float,
                 floor: float, alpha: float = 0.75):
    """APGD on ``loss_fn``; (the lowest-loss successful iterate, else the best one; success).
    Stops when every sample succeeds at the loss's ``floor``."""
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    view = (-1,) + (1,) * (x.ndim - 1)
    every = torch.arange(len(x))
    cur = x.clone()
    keeper = Keeper(cur)
    settled = torch.zeros(len(x), dtype=torch.bool)

    def step_at(point):
        loss, grad, ok = tracked_step(logits_fn, loss_fn, success, point, every)
        keeper.offer(every, point, loss, ok)
        settled.logical_or_(ok & (loss <= floor + 1e-6))
        return loss, grad

    loss, grad = step_at(cur)
    best, best_loss, best_grad = cur.clone(), loss.clone(), grad.clone()
    eta = torch.full((len(x),), 2 * eps)
    prev = cur.clone()
    marks = checkpoints(steps)
    last_mark, lowered = 0, torch.zeros(len(x))
    eta_then, best_then = eta.clone(), best_loss.clone()  # at checkpoint w_0 = 0
    for k in range(steps):
        z = (cur - eta.view(view) * grad.sign()).clamp(min=lo, max=hi)
        nxt = z if k == 0 else (cur + alpha * (z - cur) + (1 - alpha) * (cur - prev)
                                ).clamp(min=lo, max=hi)
        prev, cur = cur, nxt
        new_loss, grad = step_at(cur)
        lowered += (new_loss < loss).float()
        loss = new_loss
        better = loss < best_loss
        best[better], best_loss[better], best_grad[better] = cur[better], loss[better], \
            grad[better]
        if bool(settled.all()):
            break
        if k + 1 in marks:
            # the paper's two conditions: too few steps lowered the loss, or the step was not
            # halved at the last checkpoint (eta then, before that decision, is eta now) and
            # the best loss has not moved since
            halve = (lowered < rho * (k + 1 - last_mark)) | ((eta == eta_then)
                                                              & (best_loss == best_then))
            eta_then, best_then = eta.clone(), best_loss.clone()
            eta[halve] /= 2
            # restart from the best point; the momentum term is then best - the iterate
            # before (x^(k+1) := x_max, as the paper and auto-attack's code do)
            cur[halve], grad[halve] = best[halve], best_grad[halve]
            loss[halve] = best_loss[halve]
            last_mark, lowered = k + 1, torch.zeros(len(x))
    found, hit = keeper.found, keeper.hit
    found[~hit] = best[~hit]
    return found, hit


class VoteAPGD(Attack):
    """Parameters as ``vote-pgd`` (no step size: APGD sets it) plus ``rho``."""

    name: ClassVar[str] = "vote-apgd"
    norm: ClassVar[str] = "Linf"
    defaults: ClassVar[dict] = {"steps": 100, "rho": 0.75, "targets": 3,
                                "coalitions": "decisive", "loss": "sum", "kappa": 1.0}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        def ascent(logits_fn, loss_fn, success, xs, floor, **_):  # deterministic: no seed
            return apgd_descent(logits_fn, loss_fn, success, xs, float(self.eps),
                                int(self.steps), float(self.rho), floor)

        return aimed_search(model, x, y, decide, mode=self.coalitions,
                            n_targets=int(self.targets), kappa=float(self.kappa),
                            reduce=self.loss, ascent=ascent)

"""Confident-PGD: targeted L-inf PGD that maximises the confidence of a wrong answer.

The attacker of a max-softmax threshold (a reject policy that accepts a single model's
answer only when its top probability reaches a threshold): for each of the ``targets``
likeliest wrong classes, ``steps`` sign-gradient steps on the targeted cross-entropy (which
raises the target's probability without a cap); per sample the result is the iterate, over
all targets and steps, whose answer is wrong with the highest top probability (the last
iterate when none is wrong). Aimed at a plain model (logits); an ensemble is attacked
through its mean-softmax surrogate if given one.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from edgempir.attacks.base import Attack, Decide


class ConfidentPGD(Attack):
    name: ClassVar[str] = "confident-pgd"
    norm: ClassVar[str] = "Linf"
    defaults: ClassVar[dict] = {"steps": 50, "rel_step": 0.1, "targets": 2}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        eps, step = float(self.eps), float(self.rel_step) * float(self.eps)
        lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
        with torch.no_grad():
            probs = model(x).softmax(dim=1).scatter(1, y[:, None], -1.0)
        targets = probs.topk(min(int(self.targets), probs.shape[1] - 1), dim=1).indices
        best = x.clone()
        best_conf = torch.full((len(y),), -1.0)
        for k in range(targets.shape[1]):
            t = targets[:, k]
            adv = x.clone()
            for s in range(int(self.steps) + 1):  # every iterate is scored, the last too
                adv = adv.detach().requires_grad_(True)
                logits = model(adv)
                with torch.no_grad():
                    p = logits.softmax(dim=1)
                    conf, pred = p.max(dim=1)
                    take = (pred != y) & (conf > best_conf)
                    best[take], best_conf[take] = adv.detach()[take], conf[take]
                if s < int(self.steps):
                    (grad,) = torch.autograd.grad(F.cross_entropy(logits, t, reduction="sum"),
                                                  adv)
                    adv = (adv - step * grad.sign()).clamp(min=lo, max=hi)
            never = best_conf < 0
            best[never] = adv.detach()[never]
        return best

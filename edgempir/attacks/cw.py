"""Carlini-Wagner L2 (2017) as the paper ran it: CleverHans' settings, one binary-search step.

Optimises ``w`` with ``x_adv = (tanh(w) + 1) / 2`` (so [0, 1] holds by construction) to
minimise ``||x_adv - x||_2^2 + c * max(Z_y - max_{j != y} Z_j + confidence, 0)`` with Adam.
With one binary-search step the constant stays at ``initial_const``; the result per sample is
the smallest-L2 iterate the decision (``decide``) misclassifies, else the input unchanged
(CleverHans' convention). Unbounded by default, as in the paper; ``eps`` bounds the L2 norm.

``abort_early`` (protocol paper: CleverHans' default, which the reference kept): every
``max(steps // 10, 1)`` iterations the batch's total loss is compared with the last check;
if it did not fall below 0.9999 times that, the attack stops there, without scoring that
iterate. As in CleverHans, the iterate after the last step is then never scored either.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from edgempir.attacks.base import Attack, Decide

#: CW's batch in the EMPIR reference (examples/mnist_attack.py: min(n, MAX_BATCH_SIZE = 100))
REFERENCE_BATCH = 100


class CW(Attack):
    name: ClassVar[str] = "cw"
    norm: ClassVar[str] = "L2"
    eps_optional: ClassVar[bool] = True
    defaults: ClassVar[dict] = {"steps": 50, "lr": 0.1, "initial_const": 10.0, "confidence": 0.0,
                                "abort_early": False}

    def __init__(self, eps: float | None = None, seed: int = 0, **params):
        super().__init__(eps, seed, **params)
        # the early abort compares the whole batch's loss: it couples the batch's images,
        # so eval runs it on the reference's batches of 100 (MAX_BATCH_SIZE, the CW batch
        # of examples/mnist_attack.py in sancharisen/EMPIR)
        self.batch_coupled = bool(self.abort_early)
        self.batch_rows = REFERENCE_BATCH if self.abort_early else None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        # atanh of values at exactly 0 or 1 is infinite: shrink by the usual 1e-6 margin
        w = torch.atanh((2 * x - 1) * (1 - 1e-6)).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=float(self.lr))
        onehot = nn.functional.one_hot(y, num_classes=model(x[:1]).shape[1]).bool()
        best = x.clone()
        best_l2 = torch.full((x.shape[0],), float("inf"))
        limit = float("inf") if self.eps is None else self.eps ** 2
        check_every = max(int(self.steps) // 10, 1)
        prev = 1e6  # CleverHans' starting value
        for it in range(int(self.steps)):
            x_adv = (torch.tanh(w) + 1) / 2
            z = model(x_adv)
            real = z[onehot]
            other = z.masked_fill(onehot, float("-inf")).amax(dim=1)
            l2 = (x_adv - x).flatten(1).pow(2).sum(dim=1)
            margin = (real - other + float(self.confidence)).clamp_min(0)
            loss = (l2 + float(self.initial_const) * margin).sum()
            if self.abort_early and it % check_every == 0:
                if loss.item() > prev * 0.9999:
                    return best
                prev = loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                # judge the iterate the loss was computed on (before the step)
                pred = z.argmax(dim=1) if decide is None else decide(x_adv)
                better = (pred != y) & (l2 < best_l2) & (l2 <= limit)
                best[better] = x_adv[better]
                best_l2[better] = l2[better]
            opt.step()
        if self.abort_early:
            return best
        with torch.no_grad():
            x_adv = (torch.tanh(w) + 1) / 2
            l2 = (x_adv - x).flatten(1).pow(2).sum(dim=1)
            pred = model(x_adv).argmax(dim=1) if decide is None else decide(x_adv)
            better = (pred != y) & (l2 < best_l2) & (l2 <= limit)
            best[better] = x_adv[better]
        return best

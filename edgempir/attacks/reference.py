"""Attack variants of the EMPIR reference code (protocol ``paper`` only).

``pgd-ref``: CleverHans' ``MadryEtAl.attack`` as bundled by sancharisen/EMPIR
(``cleverhans/attacks.py``): the random start ``x + U(-eps, eps)`` is *not* clipped to
[0, 1], so the first gradient is taken outside the image domain; every step then clips to
[0, 1] and to the eps ball. One start, no restarts (the reference's).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from edgempir.attacks.base import Decide
from edgempir.attacks.bim import BIM
from edgempir.attacks.pgd import input_gradient, sign_gradient_ascent


class PGDReference(BIM):
    """BIM (its parameters, the paper's step 0.01 and 40 steps) whose first step starts
    from the reference's unclipped random point."""

    name: ClassVar[str] = "pgd-ref"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        steps = int(self.steps)
        if steps < 1:
            return x.clone()
        gen = torch.Generator().manual_seed(self.seed)
        start = x + (2 * self.uniform(x.shape, None, gen, "start") - 1) * self.eps
        # first step from the unclipped start; sign_gradient_ascent projects it into the
        # eps ball and [0, 1] and takes the ordinary projected steps from there
        first = (start + float(self.step_size) * input_gradient(model, start, y).sign())
        return sign_gradient_ascent(model, x, y, self.eps, float(self.step_size), steps - 1,
                                    start=first)

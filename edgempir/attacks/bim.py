"""BIM (Kurakin et al. 2017): PGD without the random start; the paper's step 0.01, 40 steps."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from edgempir.attacks.base import Attack, Decide
from edgempir.attacks.pgd import sign_gradient_ascent


class BIM(Attack):
    name: ClassVar[str] = "bim"
    norm: ClassVar[str] = "Linf"
    defaults: ClassVar[dict] = {"steps": 40, "step_size": 0.01}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        return sign_gradient_ascent(model, x, y, self.eps, float(self.step_size),
                                    int(self.steps))

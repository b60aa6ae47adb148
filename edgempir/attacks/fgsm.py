"""FGSM (Goodfellow et al. 2015): one sign-gradient step of size eps, with the true labels."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from edgempir.attacks.base import Attack, Decide
from edgempir.attacks.pgd import sign_gradient_ascent


class FGSM(Attack):
    name: ClassVar[str] = "fgsm"
    norm: ClassVar[str] = "Linf"
    defaults: ClassVar[dict] = {}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        return sign_gradient_ascent(model, x, y, self.eps, self.eps, 1)

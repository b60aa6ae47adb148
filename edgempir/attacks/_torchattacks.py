"""Shared wrapper for AutoAttack's components as implemented by torchattacks (3.5).

torchattacks is imported lazily (it is an optional dependency of the host side and pulls
scipy). Its attacks call ``model(x)`` and expect logits; log-probabilities (our mean-softmax
surrogate) work the same for their losses (CE, DLR, margin). They return, per sample, an
example that fools the *model they attack* or the input unchanged: the caller scores the
result with the defence's real decision anyway.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from edgempir.attacks.base import Attack, AttackError, Decide


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - installed with the host extras
        raise AttackError(f"AutoAttack's components need torchattacks ({e}); install it with "
                          "'pip install --no-deps torchattacks==3.5.1'") from None
    return torchattacks


class TorchattacksAttack(Attack):
    """Subclasses name the torchattacks class and map our parameters onto its arguments."""

    ta_class: ClassVar[str] = ""
    # torchattacks seeds one generator per call and draws for the whole batch (APGD's
    # start, Square's windows, FAB's restarts): an image's result depends on its batch
    batch_coupled = True

    def ta_kwargs(self, n_classes: int) -> dict[str, Any]:
        raise NotImplementedError

    def ta_n_classes(self, n_classes: int) -> int:
        """torchattacks' ``n_classes`` for a targeted attack (it attacks ``n_classes - 1``
        target classes in turn): every class but the true one, or ``target_classes`` of
        them when fewer are asked for."""
        asked = getattr(self, "target_classes", None)
        if asked is not None and int(asked) < 1:
            raise AttackError(f"{self.name}: target_classes {asked} attacks no class; give at "
                              "least 1, or None for every class but the true one")
        targets = n_classes - 1 if asked is None else min(int(asked), n_classes - 1)
        return targets + 1

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                decide: Decide | None) -> torch.Tensor:
        ta = _torchattacks()
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        attack = getattr(ta, self.ta_class)(model, **self.ta_kwargs(n_classes))
        return attack(x, y).detach()

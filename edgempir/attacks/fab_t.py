"""FAB-T (Croce & Hein 2020): targeted minimum-norm attack; counts only results within eps."""
from __future__ import annotations

from typing import ClassVar

from edgempir.attacks._torchattacks import TorchattacksAttack


class FABT(TorchattacksAttack):
    name: ClassVar[str] = "fab-t"
    norm: ClassVar[str] = "Linf"
    ta_class: ClassVar[str] = "FAB"
    # AutoAttack standard: 100 iterations, 1 restart, 9 target classes
    defaults: ClassVar[dict] = {"steps": 100, "restarts": 1, "target_classes": None}

    def ta_kwargs(self, n_classes: int) -> dict:
        return {"norm": "Linf", "eps": self.eps, "steps": int(self.steps),
                "n_restarts": int(self.restarts), "seed": self.seed, "multi_targeted": True,
                "n_classes": self.ta_n_classes(n_classes)}

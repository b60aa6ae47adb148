"""APGD-T (Croce & Hein 2020): targeted APGD on the DLR loss, one run per target class."""
from __future__ import annotations

from typing import ClassVar

from edgempir.attacks._torchattacks import TorchattacksAttack


class APGDT(TorchattacksAttack):
    name: ClassVar[str] = "apgd-t"
    norm: ClassVar[str] = "Linf"
    ta_class: ClassVar[str] = "APGDT"
    # AutoAttack standard: 100 iterations, 1 restart, 9 target classes (all but the true one)
    defaults: ClassVar[dict] = {"steps": 100, "restarts": 1, "rho": 0.75, "target_classes": None}

    def ta_kwargs(self, n_classes: int) -> dict:
        return {"norm": "Linf", "eps": self.eps, "steps": int(self.steps),
                "n_restarts": int(self.restarts), "seed": self.seed, "rho": float(self.rho),
                "n_classes": self.ta_n_classes(n_classes)}

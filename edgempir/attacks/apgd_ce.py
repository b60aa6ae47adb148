"""APGD-CE (Croce & Hein 2020): step-size-free PGD on the cross-entropy; AutoAttack's first."""
from __future__ import annotations

from typing import ClassVar

from edgempir.attacks._torchattacks import TorchattacksAttack


class APGDCE(TorchattacksAttack):
    name: ClassVar[str] = "apgd-ce"
    norm: ClassVar[str] = "Linf"
    ta_class: ClassVar[str] = "APGD"
    # AutoAttack standard: 100 iterations, 1 restart, rho 0.75
    defaults: ClassVar[dict] = {"steps": 100, "restarts": 1, "rho": 0.75}

    def ta_kwargs(self, n_classes: int) -> dict:
        return {"norm": "Linf", "eps": self.eps, "steps": int(self.steps),
                "n_restarts": int(self.restarts), "seed": self.seed, "loss": "ce",
                "rho": float(self.rho)}

"""Square attack (Andriushchenko et al. 2020): query-only random search on the margin loss.

It never looks at a gradient, so it is the check that gradient masking (quantizers, votes)
has not fooled the white-box attacks: see docs/EVAL.md, ``square-beats-white-box``.
"""
from __future__ import annotations

from typing import ClassVar

from edgempir.attacks._torchattacks import TorchattacksAttack


class Square(TorchattacksAttack):
    name: ClassVar[str] = "square"
    norm: ClassVar[str] = "Linf"
    white_box: ClassVar[bool] = False
    ta_class: ClassVar[str] = "Square"
    # AutoAttack standard: 5000 queries, 1 restart, p_init 0.8
    defaults: ClassVar[dict] = {"n_queries": 5000, "restarts": 1, "p_init": 0.8}

    def ta_kwargs(self, n_classes: int) -> dict:
        return {"norm": "Linf", "eps": self.eps, "n_queries": int(self.n_queries),
                "n_restarts": int(self.restarts), "p_init": float(self.p_init),
                "loss": "margin", "seed": self.seed}

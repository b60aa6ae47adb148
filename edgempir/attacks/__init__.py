"""Attacks: one small file per attack over :class:`edgempir.attacks.base.Attack`.

``REGISTRY`` maps the names used on the command line and in reports to the classes;
``make_attack(name, eps=..., **params)`` builds one and rejects unknown names and
parameters with a one-line :class:`AttackError`. AutoAttack's components (apgd-ce, apgd-t,
fab-t, square) wrap torchattacks, imported only when one of them runs. ``vote-pgd`` and
``vote-apgd`` aim at the deployed vote (coalitions of members, ``_vote``); ``confident-pgd``
at a max-softmax threshold.
"""
from __future__ import annotations

from edgempir.attacks.apgd_ce import APGDCE
from edgempir.attacks.apgd_t import APGDT
from edgempir.attacks.base import Attack, AttackError, check_eps, project
from edgempir.attacks.bim import BIM
from edgempir.attacks.confident_pgd import ConfidentPGD
from edgempir.attacks.cw import CW
from edgempir.attacks.fab_t import FABT
from edgempir.attacks.fgsm import FGSM
from edgempir.attacks.pgd import PGD
from edgempir.attacks.reference import PGDReference
from edgempir.attacks.square import Square
from edgempir.attacks.vote_apgd import VoteAPGD
from edgempir.attacks.vote_pgd import VotePGD

REGISTRY: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "pgd-ref": PGDReference,
    "cw": CW,
    "apgd-ce": APGDCE,
    "apgd-t": APGDT,
    "fab-t": FABT,
    "square": Square,
    # aimed at the deployed vote and at the reject policies (docs/EVAL.md)
    "vote-pgd": VotePGD,
    "vote-apgd": VoteAPGD,
    "confident-pgd": ConfidentPGD,
}


def canonical_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def make_attack(name: str, eps: float | None = None, **params) -> Attack:
    key = canonical_name(name)
    if key not in REGISTRY:
        raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(REGISTRY)}")
    return REGISTRY[key](eps=eps, **params)


__all__ = [
    "REGISTRY",
    "Attack",
    "AttackError",
    "canonical_name",
    "check_eps",
    "make_attack",
    "project",
]

"""Protocols, configurations and attack plans of ``edgempir eval`` (docs/EVAL.md#protocols,
docs/EVAL.md#configurations), and the choices made before anything is attacked: the eps
list and the test subset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgempir.attacks.base import AttackError, check_eps
from edgempir.data import DEFAULT_EPS  # one table for eval and adversarial training
from edgempir.rundir import EVAL_SCHEMA as SCHEMA  # noqa: F401  (re-exported; rundir owns the formats)

SCHEMA_VERSION = 1
PROTOCOLS = ("paper", "adaptive")
DOC = "docs/EVAL.md"

@dataclass(frozen=True)
class Planned:
    """One attack of a configuration.

    ``ensemble_source``: where the ensemble's gradients come from: ``surrogate`` (mean
    softmax), ``reference`` (the vote's reference member, the fp32 one: the paper's BIM/CW),
    ``agreeing`` (mean softmax of the members agreeing with the vote: the paper's
    FGSM/PGD, :class:`edgempir.ensemble.AgreeingMembersAverage`) or ``vote`` (the ensemble
    itself: the attack reads every member's logits and aims at the coalitions that decide
    the vote, ``edgempir.attacks._vote``).
    ``labels``: what the attack moves away from: ``true`` labels, or ``predicted`` (the
    reference's: the vote's clean decision for the ensemble, a member's own clean
    prediction when it is attacked alone).
    ``cascade``: run only on samples still robust after the previous attacks (AutoAttack's
    practice; the attack's figure is then the robust accuracy after it, cumulative).
    ``judge``: what decides success inside the attack (restarts, CW's best iterate):
    ``real`` is the target's deployed decision (the vote), ``own`` the attacked model's argmax.
    """

    name: str
    attack: str
    params: dict = field(default_factory=dict)
    ensemble_source: str = "surrogate"
    #: which members are also attacked alone with their own gradients: "all", "reference"
    #: (the fp32 member only: the paper's "fp32 alone" row) or "none"
    members: str = "all"
    cascade: bool = False
    judge: str = "real"
    #: parameters that differ when the attack is aimed at a member alone (quick: shorter PGD
    #: for the transfer sources, undefended members need few steps)
    member_params: dict = field(default_factory=dict)
    labels: str = "true"

    def params_for(self, source: str) -> dict:
        return {**self.params, **self.member_params} if source.startswith("m") else self.params

    @property
    def bounded(self) -> bool:
        return self.attack != "cw"


@dataclass(frozen=True)
class Config:
    protocol: str
    name: str
    summary: str                  # what it runs, for the label
    n: int | None                 # default number of test images; None: the whole test set
    plan: tuple[Planned, ...]
    pool: str                     # worst case over "all" example sets, or "aimed" ones only
    checks: dict | None = None    # masking-check settings (adaptive only)
    reject: dict | None = None    # reject-policy settings: aimed attacks' steps and targets

    @property
    def label(self) -> str:
        if self.name == "standard":
            return f"standard ({self.summary})"
        return f"{self.name} (lighter than standard: {self.summary})"


# the reference's eps per data set (examples/mnist_attack.py, cifar10_attack.py; the
# paper uses MNIST's for Fashion-MNIST too)
PAPER_EPS = {"mnist": 0.3, "fashion-mnist": 0.3, "cifar10": 0.1, "synthetic": 0.3}


def _paper_plan(members: str) -> tuple[Planned, ...]:
    """The reference code's attacks (sancharisen/EMPIR, examples/mnist_attack.py with its
    bundled cleverhans/attacks.py); docs/EVAL.md#protocol-paper lists what is kept."""
    ref = {"members": members, "judge": "own", "labels": "predicted"}
    return (
        Planned("fgsm", "fgsm", {}, "agreeing", **ref),
        Planned("bim", "bim", {"steps": 40, "step_size": 0.01}, "reference", **ref),
        Planned("pgd", "pgd-ref", {"steps": 40, "step_size": 0.01}, "agreeing", **ref),
        Planned("cw", "cw", {"steps": 50, "lr": 0.1, "initial_const": 10.0,
                             "abort_early": True}, "reference", **ref),
    )


def _adaptive_plan(pgd_steps: int, restarts: int, apgd_steps: int, targeted: bool,
                   square_queries: int, members_everywhere: bool,
                   member_pgd_steps: int | None = None,
                   vote_attacks: tuple[Planned, ...] = ()) -> tuple[Planned, ...]:
    """PGD first on everything (aimed at the ensemble and at each member: the transfer
    sources), then the attacks aimed at the vote, then AutoAttack's components, in cascade
    on what is still robust."""
    more = "all" if members_everywhere else "none"
    member_params = {"steps": member_pgd_steps} if member_pgd_steps else {}
    plan = [Planned("pgd", "pgd", {"steps": pgd_steps, "rel_step": 0.25, "step_size": None,
                                   "random_start": True, "restarts": restarts},
                    member_params=member_params),
            *vote_attacks,
            Planned("apgd-ce", "apgd-ce", {"steps": apgd_steps, "restarts": 1}, members=more,
                    cascade=True)]
    if targeted:
        plan += [Planned("apgd-t", "apgd-t", {"steps": apgd_steps, "restarts": 1},
                         members=more, cascade=True),
                 Planned("fab-t", "fab-t", {"steps": apgd_steps, "restarts": 1}, members=more,
                         cascade=True)]
    plan.append(Planned("square", "square", {"n_queries": square_queries, "restarts": 1},
                        members=more, cascade=True))
    return tuple(plan)


def _vote_attacks(steps: int, targets: int, apgd: bool) -> tuple[Planned, ...]:
    """Targeted searches aimed at the deployed vote (issue 14): every coalition of members
    that can decide it (for three members: each pair, and the reference with the low-bit
    pair split) towards each of the ``targets`` likeliest wrong classes, through the members'
    own gradients, each iterate judged by the real vote; with ``apgd`` also the same searches
    with APGD's step-size schedule. In cascade: only what the surrogate attacks left robust
    is searched, so the cost is a few dozen images, not n."""
    plan = [Planned("vote-pgd", "vote-pgd", {"steps": steps, "rel_step": 0.1, "targets": targets,
                                             "random_start": True},
                    ensemble_source="vote", members="none", cascade=True)]
    if apgd:
        plan.append(Planned("vote-apgd", "vote-apgd", {"steps": steps, "targets": targets},
                            ensemble_source="vote", members="none", cascade=True))
    return tuple(plan)


CONFIGS: dict[tuple[str, str], Config] = {
    ("paper", "standard"): Config(
        "paper", "standard", "FGSM, BIM-40, PGD-40, CW-L2-50 as the reference code ran them, "
        "on the whole test set", None, _paper_plan("all"), pool="aimed"),
    ("paper", "quick"): Config(
        "paper", "quick", "the same attacks, default n 300 instead of the whole test set; of "
        "the members only "
        "the fp32 one is attacked alone (the paper's 'fp32 alone' row)",
        300, _paper_plan("reference"), pool="aimed"),
    ("adaptive", "standard"): Config(
        "adaptive", "standard",
        "PGD-100 x5 restarts, vote-PGD-100 and vote-APGD-100 aimed at the vote (3 likeliest "
        "wrong classes), AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square 5000 queries), "
        "transfer from each member",
        1000, _adaptive_plan(100, 5, 100, True, 5000, True,
                             vote_attacks=_vote_attacks(100, 3, apgd=True)), pool="all",
        checks={"n": 200, "large_eps": 0.5, "large_eps_steps": 50, "more_steps_factor": 2},
        reject={"steps": 100, "targets": 3}),
    ("adaptive", "quick"): Config(
        "adaptive", "quick",
        "default n 300, PGD-50 x1 on the ensemble, PGD-40 on each member (transfer), "
        "vote-PGD-50 aimed at the vote (2 likeliest wrong classes), APGD-CE-50 and Square "
        "300 queries on the ensemble only; no APGD-T, no FAB-T, no vote-APGD",
        300, _adaptive_plan(50, 1, 50, False, 300, False, member_pgd_steps=40,
                            vote_attacks=_vote_attacks(50, 2, apgd=False)), pool="all",
        checks={"n": 32, "large_eps": 0.5, "large_eps_steps": 10, "more_steps_factor": 2},
        reject={"steps": 50, "targets": 2}),
}
CONFIG_NAMES = ("standard", "quick")


def get_config(protocol: str, name: str) -> Config:
    if protocol not in PROTOCOLS:
        raise AttackError(f"unknown protocol {protocol!r}; choose one of "
                          f"{', '.join(PROTOCOLS)} (or 'both')")
    if (protocol, name) not in CONFIGS:
        raise AttackError(f"unknown configuration {name!r}; choose one of "
                          f"{', '.join(CONFIG_NAMES)}")
    return CONFIGS[(protocol, name)]


def select_attacks(configs: list[Config], names: list[str] | None
                   ) -> list[tuple[Planned, ...]]:
    """The plan of each config restricted to ``names`` (every name must belong to at least
    one of the protocols, and every protocol must keep at least one attack)."""
    if not names:
        return [c.plan for c in configs]
    from edgempir.attacks import REGISTRY, canonical_name

    wanted = [canonical_name(n) for n in names if n.strip()]
    plans = []
    for n in wanted:
        if not any(n == p.name for c in configs for p in c.plan):
            known = sorted({p.name for c in configs for p in c.plan})
            where = "" if n in REGISTRY else f"; registered attacks: {', '.join(REGISTRY)}"
            protos = " and ".join(c.protocol for c in configs)
            raise AttackError(f"unknown attack {n!r} for protocol {protos}; choose from "
                              f"{', '.join(known)}{where}")
    for config in configs:
        plan = tuple(p for p in config.plan if p.name in wanted)
        if not plan:
            raise AttackError(f"none of the attacks {', '.join(wanted)} is part of protocol "
                              f"{config.protocol}; its attacks are "
                              f"{', '.join(p.name for p in config.plan)}")
        plans.append(plan)
    return plans


def parse_eps_list(text: str | None, dataset: str, protocol: str | None = None) -> list[float]:
    """``"0.05,0.1"``, ``"8/255"``; None -> the data set's default eps (protocol paper: the
    reference's, ``PAPER_EPS``)."""
    if text is None or not str(text).strip():
        table = PAPER_EPS if protocol == "paper" else DEFAULT_EPS
        return [table.get(dataset, 0.1)]
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(part)
        except (ValueError, ZeroDivisionError):
            raise AttackError(f"eps {part!r} is not a number; give e.g. 0.1, 8/255 or a "
                              "comma-separated list 0.05,0.1,0.2") from None
        values.append(check_eps(value, "Linf"))
    if not values:
        raise AttackError("--eps is empty; give e.g. 0.1 or 0.05,0.1,0.2")
    return list(dict.fromkeys(values))


def choose_subset(n_test: int, n: int, seed: int) -> np.ndarray:
    """Sorted test-set indices: ``n`` drawn without replacement by ``default_rng(seed)``."""
    if n <= 0:
        raise AttackError(f"--n {n}: need at least one test image")
    if n >= n_test:
        return np.arange(n_test, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_test, size=n, replace=False)).astype(np.int64)


SUBSET_HOW = ("numpy.sort(numpy.random.default_rng(seed).choice(n_test, n, replace=False)) "
              "over the data set's test split (all of it, in order, when n >= n_test)")



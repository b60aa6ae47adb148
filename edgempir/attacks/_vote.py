"""Shared machinery of the attacks aimed at a vote (``vote-pgd``, ``vote-apgd``).

A majority vote with a reference member is wrong as soon as a *coalition* of members that
can decide it agrees on a wrong class. For M members (strict majority: more than M/2):

- every subset of ``M // 2 + 1`` members pushed to one common wrong class ``t`` (for the
  paper's three members: each pair);
- the reference member pushed to ``t`` while enough of the others leave the true class that
  it has no majority (``M - 1 - M // 2`` of them, each choice a coalition; for three
  members: one of the low-bit pair, which splits the pair), so the reference decides.

An attack on the mean-softmax surrogate aims at neither: it lowers the *average* probability
of the true class and can leave the low-bit members on two different wrong classes, which the
reference then outvotes (docs/EVAL.md, "Attacks aimed at the vote"). These attacks run one
targeted search per (coalition, likeliest wrong class), on the samples that the earlier
searches did not break, through the members' own gradients (Brevitas' straight-through
quantizers). Every iterate is judged by the real decision computed from the same forward
pass (the combiner of the ensemble: the vote); of the examples that fool the deployed rule a
search keeps the one with the lowest loss (deepest, not on the boundary: see ``vote_pgd``),
and the result is confirmed with ``decide`` when the caller gives it.

``mode="all"`` has one coalition, every member: the attacker of the ``unanimous`` reject
policy (all members must agree on the wrong class for the answer to be accepted).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgempir.attacks.base import AttackError, Decide

MODES = ("decisive", "all")
LOSSES = ("sum", "max")


@dataclass(frozen=True)
class Coalition:
    """``targeted`` members are pushed to the target class, ``away`` members off the true
    class."""

    targeted: tuple[int, ...]
    away: tuple[int, ...] = ()


def coalitions(m: int, reference: int, mode: str) -> list[Coalition]:
    """Decisive coalitions: every ``M // 2 + 1`` members; then the reference with each choice
    of ``M - 1 - M // 2`` others leaving the true class (one search per choice: a loss that
    picks the easiest member itself gets stuck when that member pulls against the
    reference)."""
    if mode not in MODES:
        raise AttackError(f"coalitions {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "all":
        return [Coalition(tuple(range(m)))]
    out = [Coalition(c) for c in itertools.combinations(range(m), m // 2 + 1)]
    if m > 1:
        others = tuple(i for i in range(m) if i != reference)
        out += [Coalition((reference,), away)
                for away in itertools.combinations(others, len(others) - m // 2)]
    return out


class MembersView:
    """The members' logits ``[M, B, K]`` and the deployed decision of what is attacked: an
    :class:`~edgempir.ensemble.Ensemble`, its mean-softmax surrogate (unwrapped: the vote is
    what is aimed at), or a plain model (one member, its own argmax)."""

    def __init__(self, model: nn.Module):
        ens = getattr(model, "ensemble", model)
        if hasattr(ens, "member_logits") and hasattr(ens, "reference"):
            from edgempir.ensemble import combine

            self.logits = ens.member_logits
            self.reference = int(ens.reference)
            self.decision = lambda logits: combine(logits, ens.combiner,
                                                   ens.reference).argmax(dim=1)
        else:
            self.logits = lambda x: model(x)[None]
            self.reference = 0
            self.decision = lambda logits: logits[0].argmax(dim=1)


def _margin_to(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``max_{j != cls} z_j - z_cls`` per member and sample ([M, B]); negative: ``cls`` wins."""
    idx = cls.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    own = logits.gather(2, idx)[..., 0]
    others = logits.scatter(2, idx, float("-inf")).amax(dim=2)
    return others - own


def coalition_loss(c: Coalition, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                   kappa: float, reduce: str) -> torch.Tensor:
    """Per-sample loss to minimise: the targeted members' margins to ``t`` and the away
    members' margins of ``y`` over the rest, each clipped at ``-kappa`` (a member that
    already votes as wanted stops pulling the step towards itself)."""
    terms = [_margin_to(logits[list(c.targeted)], t).clamp(min=-kappa)]
    if c.away:
        terms.append((-_margin_to(logits[list(c.away)], y)).clamp(min=-kappa))
    stacked = torch.cat(terms)
    return stacked.sum(dim=0) if reduce == "sum" else stacked.amax(dim=0)


def success_fn(view: MembersView, mode: str) -> Callable[[torch.Tensor, torch.Tensor],
                                                         torch.Tensor]:
    """Per-sample success on member logits: the decision is wrong (``decisive``), or every
    member votes the same wrong class (``all``: wrong *and accepted* by ``unanimous``)."""
    if mode == "all":
        def unanimous_wrong(logits, y):
            preds = logits.argmax(dim=2)
            return (preds == preds[:1]).all(dim=0) & (preds[0] != y)
        return unanimous_wrong
    return lambda logits, y: view.decision(logits) != y


def likeliest_wrong(logits: torch.Tensor, members: tuple[int, ...], y: torch.Tensor,
                    k: int) -> torch.Tensor:
    """The ``k`` classes other than ``y`` with the highest mean softmax over ``members``
    ([B, k]), at the clean input."""
    probs = logits[list(members)].softmax(dim=2).mean(dim=0)
    probs = probs.scatter(1, y[:, None], -1.0)
    return probs.topk(min(k, probs.shape[1] - 1), dim=1).indices


#: an ascent: (logits_fn, loss_fn(logits, rows) -> [b], success(logits, rows) -> [b] bool,
#: x, floor, rows=, search=) -> (lowest-loss successful iterate or the last one, success
#: [n]); the callbacks' ``rows`` index the samples of ``x`` that the logits belong to (an
#: ascent drops samples that succeed at the loss's ``floor``); the keywords ``rows`` (of
#: the attacked batch) and ``search`` ((coalition, target) numbers) key per-image seeds
Ascent = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def aimed_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, decide: Decide | None,
                 *, mode: str, n_targets: int, kappa: float, reduce: str,
                 ascent: Callable) -> torch.Tensor:
    """One ``ascent`` per (coalition, likeliest wrong class) on what is still unbroken."""
    if reduce not in LOSSES:
        raise AttackError(f"loss {reduce!r}: choose one of {', '.join(LOSSES)}")
    view = MembersView(model)
    with torch.no_grad():
        clean_logits = view.logits(x)
    m = clean_logits.shape[0]
    success = success_fn(view, mode)
    best = x.clone()
    done = torch.zeros(len(y), dtype=torch.bool)
    for ci, c in enumerate(coalitions(m, view.reference, mode)):
        targets = likeliest_wrong(clean_logits, c.targeted, y, int(n_targets))
        for k in range(targets.shape[1]):
            todo = torch.nonzero(~done)[:, 0]
            if todo.numel() == 0:
                return best
            ys, ts = y[todo], targets[todo, k]

            def loss_fn(logits, rows, ys=ys, ts=ts, c=c):
                return coalition_loss(c, logits, ys[rows], ts[rows], kappa, reduce)

            def won(logits, rows, ys=ys):
                return success(logits, ys[rows])

            # the loss's floor: every clipped term at -kappa ("max": the largest one)
            terms = len(c.targeted) + len(c.away)
            floor = -kappa * (terms if reduce == "sum" else 1)
            # rows and search: which images and which search, for per-image seeds
            adv, hit = ascent(view.logits, loss_fn, won, x[todo], floor, rows=todo,
                              search=(ci, k))
            if decide is not None and mode == "decisive":
                hit = hit & (decide(adv) != ys)   # the caller's word on the deployed decision
            best[todo] = adv
            done[todo] = hit
    return best

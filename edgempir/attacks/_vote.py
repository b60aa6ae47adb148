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
#: x, floor, draws=) -> (lowest-loss successful iterate or the last one, success [n]); the
#: callbacks' ``rows`` index the samples of ``x`` that the logits belong to (an ascent drops
#: samples that succeed at the loss's ``floor``); ``draws`` keys per-image seeds: one
#: ``(rows of the attacked batch, (coalition, target) numbers)`` per search stacked in ``x``,
#: in order (one search, or several run as one batch: :data:`STACK_ROWS`)
Ascent = Callable[..., tuple[torch.Tensor, torch.Tensor]]

#: once the searches left, times the images left, fit in this many rows, they run as one
#: batch: a search on a few images costs nearly what it costs on many, so the last, mostly
#: unbreakable images would otherwise pay every search's steps one small batch at a time.
#: An image's result is the same either way (it is seeded per image, and a member's rows do
#: not depend on the other rows of a batch of MIN_ROWS or more: eval/shard.py).
STACK_ROWS = 256


@dataclass(frozen=True)
class Search:
    """One targeted search: coalition number ``ci`` (``c``), the ``k``-th likeliest wrong
    class of the coalition, ``targets`` [n] for every image of the attacked batch."""

    ci: int
    c: Coalition
    k: int
    targets: torch.Tensor

    def floor(self, kappa: float, reduce: str) -> float:
        """The loss's floor: every clipped term at -kappa (``max``: the largest one)."""
        terms = len(self.c.targeted) + len(self.c.away)
        return -kappa * (terms if reduce == "sum" else 1)


def aimed_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, decide: Decide | None,
                 *, mode: str, n_targets: int, kappa: float, reduce: str,
                 ascent: Callable, stack_rows: int | None = None) -> torch.Tensor:
    """One ``ascent`` per (coalition, likeliest wrong class) on what is still unbroken; the
    last ones stacked into one batch once they fit in ``stack_rows`` rows (default
    :data:`STACK_ROWS`; an image keeps the first search that breaks it, as if they ran one by
    one)."""
    stack_rows = STACK_ROWS if stack_rows is None else stack_rows
    if reduce not in LOSSES:
        raise AttackError(f"loss {reduce!r}: choose one of {', '.join(LOSSES)}")
    view = MembersView(model)
    with torch.no_grad():
        clean_logits = view.logits(x)
    success = success_fn(view, mode)
    searches = []
    for ci, c in enumerate(coalitions(clean_logits.shape[0], view.reference, mode)):
        targets = likeliest_wrong(clean_logits, c.targeted, y, int(n_targets))
        searches += [Search(ci, c, k, targets[:, k]) for k in range(targets.shape[1])]
    best = x.clone()
    done = torch.zeros(len(y), dtype=torch.bool)
    s = 0
    while s < len(searches):
        todo = torch.nonzero(~done)[:, 0]
        if todo.numel() == 0:
            break
        rest = searches[s:]
        floors = {search.floor(kappa, reduce) for search in rest}
        n = len(rest) if len(todo) * len(rest) <= stack_rows and len(floors) == 1 else 1
        adv, hit = _run_stacked(view, success, searches[s:s + n], x, y, todo, decide,
                                mode == "decisive", kappa, reduce, ascent)
        best[todo] = adv
        done[todo] = hit
        s += n
    return best


def _run_stacked(view, success, stack: list[Search], x, y, todo, decide, confirm: bool,
                 kappa: float, reduce: str, ascent: Callable):
    """The searches of ``stack`` on the images ``todo``, as one batch (search-major);
    per image (the first search that broke it, else the last search's result; broken)."""
    g, b = len(stack), len(todo)
    ys, ts = y[todo].repeat(g), torch.cat([search.targets[todo] for search in stack])

    def loss_fn(logits, rows):  # rows: increasing, so each search's rows are one run
        if g == 1:
            return coalition_loss(stack[0].c, logits, ys[rows], ts[rows], kappa, reduce)
        group = torch.div(rows, b, rounding_mode="floor")
        parts = []
        for j in torch.unique(group).tolist():
            sel = torch.nonzero(group == j)[:, 0]
            r = rows[sel]
            parts.append(coalition_loss(stack[j].c, logits[:, sel], ys[r], ts[r], kappa,
                                        reduce))
        return torch.cat(parts)

    def won(logits, rows):
        return success(logits, ys[rows])

    draws = [(todo, (search.ci, search.k)) for search in stack]
    adv, hit = ascent(view.logits, loss_fn, won, x[todo].repeat(g, *([1] * (x.ndim - 1))),
                      stack[0].floor(kappa, reduce), draws=draws)
    if decide is not None and confirm:
        hit = hit & (decide(adv) != ys)   # the caller's word on the deployed decision
    adv, hit = adv.view(g, b, *x.shape[1:]), hit.view(g, b)
    # per image: the first search that broke it, else the last one
    first = torch.where(hit.any(dim=0), hit.float().argmax(dim=0), torch.tensor(g - 1))
    return adv[first, torch.arange(b)], hit.any(dim=0)

"""The machinery of the attacks aimed at the vote (edgempir/attacks/_vote.py), piece by piece:
coalitions for any ensemble size, the clipped losses and their floor, success, the targets,
and how aimed_search runs its searches (a recording ascent stands in for PGD/APGD).
Written for the survivors of the mutation run of 2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgempir.attacks._vote import (
    Coalition,
    MembersView,
    aimed_search,
    coalition_loss,
    coalitions,
    likeliest_wrong,
    success_fn,
)
from edgempir.attacks.base import AttackError
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec


@pytest.mark.parametrize("m, ref, pairs, with_ref", [
    (4, 3, 4, [((3,), (0,)), ((3,), (1,)), ((3,), (2,))]),         # 3 of 4; ref + 1 leaves
    (5, 0, 10, [((0,), (1, 2)), ((0,), (1, 3)), ((0,), (1, 4)), ((0,), (2, 3)),
                ((0,), (2, 4)), ((0,), (3, 4))]),                   # 3 of 5; ref + 2 leave
    (2, 1, 1, [((1,), ())]),                                         # both; ref alone
])
def test_decisive_coalitions_for_other_ensemble_sizes(m, ref, pairs, with_ref):
    got = coalitions(m, ref, "decisive")
    majority = [c for c in got if not c.away and len(c.targeted) == m // 2 + 1]
    assert len(majority) == pairs and all(len(set(c.targeted)) == m // 2 + 1 for c in majority)
    assert [(c.targeted, c.away) for c in got[len(majority):]] == with_ref


def test_the_unanimous_coalition_and_an_unknown_mode():
    assert coalitions(3, 2, "all") == [Coalition((0, 1, 2))]
    assert coalitions(1, 0, "decisive") == [Coalition((0,))]   # a single model: one search
    with pytest.raises(AttackError, match="coalitions 'most'"):
        coalitions(3, 2, "most")


def _logits(*rows):
    """[members, 1, classes] from one logit row per member."""
    return torch.tensor([[r] for r in rows], dtype=torch.float32)


def test_the_loss_clips_each_term_at_minus_kappa_and_sums_or_takes_the_largest():
    y, t = torch.tensor([0]), torch.tensor([1])
    # member 0 votes t by 5 (clipped to -1), member 1 is 2 short of t; member 2 (away)
    # is off y by 3 (clipped to -1)
    logits = _logits([0.0, 5.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0])
    pair = coalition_loss(Coalition((0, 1)), logits, y, t, kappa=1.0, reduce="sum")
    assert pair.tolist() == [pytest.approx(-1.0 + 2.0)]
    away = Coalition((1,), (2,))
    assert coalition_loss(away, logits, y, t, 1.0, "sum").tolist() == [pytest.approx(2.0 - 1.0)]
    assert coalition_loss(away, logits, y, t, 1.0, "max").tolist() == [pytest.approx(2.0)]
    # every term past its margin: the floor, -kappa per term
    done = _logits([0.0, 9.0, 0.0], [0.0, 0.0, 9.0])
    assert coalition_loss(Coalition((0,), (1,)), done, y, t, 0.5, "sum").tolist() == [-1.0]


class Fixed(nn.Module):
    """A member whose logits are a fixed row whatever the input."""

    def __init__(self, row):
        super().__init__()
        self.register_buffer("row", torch.tensor(row, dtype=torch.float32))

    def forward(self, x):
        return self.row.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _ensemble(*rows) -> Ensemble:
    specs = [parse_spec(s) for s in ("w2a4", "w2a4", "fp32")][:len(rows)]
    return Ensemble([Fixed(r) for r in rows], specs, "vote")


def test_success_is_a_wrong_vote_or_a_unanimous_wrong_one():
    view = MembersView(_ensemble([1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]))
    split = _logits([0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])  # vote: 1, not unanimous
    same = _logits([0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0])   # all vote 1
    right = _logits([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0])  # all vote 0 = y
    y = torch.tensor([0])
    decisive, unanimous = success_fn(view, "decisive"), success_fn(view, "all")
    assert [bool(decisive(s, y)) for s in (split, same, right)] == [True, True, False]
    assert [bool(unanimous(s, y)) for s in (split, same, right)] == [False, True, False]
    # wrong by a lower class than the true one (y = 2); member 0 above the others
    below = _logits([0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0])  # all vote 1
    top_first = _logits([0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0])  # 2, 1, 1
    y2 = torch.tensor([2])
    assert bool(decisive(below, y2)) and bool(unanimous(below, y2))
    assert not bool(unanimous(top_first, torch.tensor([0])))


def test_likeliest_wrong_classes_skip_the_true_class_and_follow_the_coalition():
    logits = _logits([5.0, 4.0, 0.0, 3.0], [5.0, 0.0, 4.0, 3.0], [0.0, 0.0, 0.0, 9.0])
    y = torch.tensor([0])
    assert likeliest_wrong(logits, (0,), y, 2).tolist() == [[1, 3]]
    assert likeliest_wrong(logits, (1,), y, 2).tolist() == [[2, 3]]
    assert likeliest_wrong(logits, (2,), y, 1).tolist() == [[3]]
    assert likeliest_wrong(logits, (0, 1), y, 9).shape == (1, 3)  # at most classes - 1
    # a second image whose true class is 2; and probabilities that underflow to 0 (a very
    # sure member): the true class is still never a target
    two = torch.stack([logits[:, 0], logits[:, 0]], dim=1)
    assert likeliest_wrong(two, (0,), torch.tensor([0, 2]), 2).tolist() == [[1, 3], [0, 1]]
    sure = _logits([0.0, 200.0, -200.0, -200.0])
    for target in likeliest_wrong(sure, (0,), y, 3)[0].tolist():
        assert target != 0


class Recorder:
    """An ascent that records each search's floor, rows and key, and reports ``hit``."""

    def __init__(self, hit: bool):
        self.calls: list[dict] = []
        self.hit = hit

    def __call__(self, logits_fn, loss_fn, success, xs, floor, draws):
        assert len(xs) == sum(len(rows) for rows, _ in draws)
        for rows, search in draws:
            self.calls.append({"floor": floor, "rows": rows.tolist(), "search": search})
        return xs + 0.01 * len(self.calls), torch.full((len(xs),), self.hit)


def _search(ens, recorder, reduce="sum", decide=None, n_targets=2, kappa=1.0, n=2,
            mode="decisive", label=0, stack_rows=0):
    """The searches one by one (``stack_rows`` 0) unless asked otherwise."""
    x, y = torch.full((n, 1, 1, 3), 0.5), torch.full((n,), label, dtype=torch.long)
    return aimed_search(ens, x, y, decide, mode=mode, n_targets=n_targets, kappa=kappa,
                        reduce=reduce, ascent=recorder, stack_rows=stack_rows)


def test_each_search_stops_at_its_own_floor_and_runs_only_what_is_unbroken():
    ens = _ensemble([3.0, 1.0, 0, 0], [3.0, 0, 1.0, 0], [3.0, 0, 0, 1.0])
    missed = Recorder(hit=False)
    best = _search(ens, missed, kappa=0.5)
    # 3 pairs and 2 reference coalitions, 2 targets each; every term at -kappa
    assert [c["search"] for c in missed.calls] == [(ci, k) for ci in range(5) for k in range(2)]
    assert {c["floor"] for c in missed.calls} == {-1.0}       # 2 terms x -0.5
    assert torch.equal(best, torch.full((2, 1, 1, 3), 0.5) + 0.01 * 10)  # the last search's
    maxed = Recorder(hit=False)
    _search(ens, maxed, reduce="max", kappa=0.5)
    assert {c["floor"] for c in maxed.calls} == {-0.5}
    # a search that breaks every image ends the attack
    broke = Recorder(hit=True)
    best = _search(ens, broke)
    assert len(broke.calls) == 1 and torch.equal(best, torch.full((2, 1, 1, 3), 0.5) + 0.01)


def test_the_callers_decision_overrules_the_search():
    ens = _ensemble([3.0, 1.0, 0, 0], [3.0, 0, 1.0, 0], [3.0, 0, 0, 1.0])
    denied = Recorder(hit=True)
    _search(ens, denied, decide=lambda xb: torch.zeros(len(xb), dtype=torch.long))
    assert len(denied.calls) == 10 and all(c["rows"] == [0, 1] for c in denied.calls)
    confirmed = Recorder(hit=True)
    _search(ens, confirmed, decide=lambda xb: torch.ones(len(xb), dtype=torch.long))
    assert len(confirmed.calls) == 1
    below = Recorder(hit=True)  # the decision is wrong by a lower class than the label
    _search(ens, below, decide=lambda xb: torch.zeros(len(xb), dtype=torch.long), label=2)
    assert len(below.calls) == 1
    # the unanimous attacker's success is every member on one wrong class, not the decision
    unanimous = Recorder(hit=True)
    _search(ens, unanimous, mode="all", decide=lambda xb: torch.zeros(len(xb), dtype=torch.long))
    assert len(unanimous.calls) == 1


def test_names_read_from_json_act_like_the_literals():
    """Settings arrive from JSON and the CLI as equal strings, not the same objects."""
    ens = _ensemble([3.0, 1.0, 0, 0], [3.0, 0, 1.0, 0], [3.0, 0, 0, 1.0])
    decisive, all_, sum_ = json.loads('["decisive", "all", "sum"]')
    by_json, by_literal = Recorder(hit=False), Recorder(hit=False)
    _search(ens, by_json, reduce=sum_, mode=decisive, kappa=0.5)
    _search(ens, by_literal, reduce="sum", mode="decisive", kappa=0.5)
    assert by_json.calls == by_literal.calls
    assert coalitions(3, 2, all_) == [Coalition((0, 1, 2))]
    view = MembersView(ens)
    same = _logits([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    assert not bool(success_fn(view, all_)(same, torch.tensor([0])))  # 1, 2, 1: not unanimous
    logits = _logits([0.0, 5.0, 0.0], [2.0, 0.0, 0.0])
    assert coalition_loss(Coalition((0, 1)), logits, torch.tensor([0]), torch.tensor([1]), 1.0,
                          sum_).tolist() == [pytest.approx(1.0)]
    denied = Recorder(hit=True)
    _search(ens, denied, mode=decisive, decide=lambda xb: torch.zeros(len(xb), dtype=torch.long))
    assert len(denied.calls) == 10


def test_five_members_floor_every_search_at_three_clipped_terms():
    specs = [parse_spec(s) for s in ("w2a4", "w2a4", "w4a4", "w4a4", "fp32")]
    rows = [[3.0, 1.0, 0, 0], [3.0, 0, 1.0, 0], [3.0, 0, 0, 1.0], [3.0, 1.0, 0, 0],
            [3.0, 0, 1.0, 0]]
    ens = Ensemble([Fixed(r) for r in rows], specs, "vote")
    rec = Recorder(hit=False)
    _search(ens, rec, n_targets=1, kappa=0.5)
    # 10 triples, then the reference with each pair of the other four leaving the label
    assert len(rec.calls) == 10 + 6 and {c["floor"] for c in rec.calls} == {-1.5}


def test_two_classes_give_one_target_whatever_is_asked_and_a_bad_loss_is_refused():
    ens = _ensemble([3.0, 1.0], [3.0, 1.0], [3.0, 1.0])
    rec = Recorder(hit=False)
    _search(ens, rec, n_targets=3)
    assert [c["search"][1] for c in rec.calls] == [0] * 5
    with pytest.raises(AttackError, match="loss 'mean'"):
        _search(ens, Recorder(hit=False), reduce="mean")

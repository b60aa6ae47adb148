"""The attacks aimed at the vote and at the reject policies beat surrogate PGD where they must.

Each case is a hand-built tiny ensemble of affine "members" over three pixels (a, b, c; the
clean image is 0.5 everywhere, eps 0.1), built so that surrogate PGD as the
adaptive protocol runs it (restarts, mean softmax, judged by the vote) fails and the
aimed attack succeeds. An identity attack fails every assertion on the aimed attack.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgempir.attacks import make_attack
from edgempir.attacks._vote import coalitions
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec

EPS = 0.1


class Affine(nn.Module):
    """logits = W (x - 0.5) + b over the three pixels of a [B, 1, 1, 3] image."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.bias = nn.Parameter(torch.tensor(bias, dtype=torch.float32))

    def forward(self, x):
        return (x.flatten(1) - 0.5) @ self.weight.t() + self.bias


def ensemble(*members) -> Ensemble:
    specs = [parse_spec(s) for s in ("fp32", "w2a4", "w2a4")]
    return Ensemble([Affine(*m) for m in members], specs, "vote")


# member 0 (fp32, the reference) cannot move; member 1 reaches class 1 easily (pixel a) and
# class 2 barely (b), member 2 the other way round. Untargeted, the surrogate raises a and b:
# member 1 -> 1, member 2 -> 2, the reference outvotes the split. Pushing the pair to class 1
# (a up, b down) wins the vote.
PAIR_CASE = (([[0, 0, 0]] * 3, [10.0, 0, 0]),
             ([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0.0, -0.5, -0.9]),
             ([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0.0, -0.9, -0.5]))
# No pair can agree on a wrong class; the reference reaches class 1 by raising c, which makes
# member 1 more sure of the true class, so the surrogate lowers c. Pushing the reference to
# class 1 while member 2 leaves class 0 (b up) splits the pair and the reference decides.
REFERENCE_CASE = (([[0, 0, 0], [0, 0, 5], [0, 0, 0]], [0.0, -0.3, -5]),
                  ([[0, 0, 20], [10, 0, 0], [0, 0, 0]], [0.0, -0.5, -5]),
                  ([[0, 0, 0], [0, 0, 0], [0, 10, 0]], [0.0, -5, -0.5]))
# Every member can reach class 1 with a; untargeted the surrogate also raises b, which sends
# member 2 to class 2: the vote is wrong but not unanimous. Driving all three to class 1 is.
UNANIMOUS_CASE = (([[0, 0, 0], [10, 0, 0], [0, 0, 0]], [0.0, -0.7, -5]),
                  ([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0.0, -0.5, -0.9]),
                  ([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0.0, -0.9, -0.5]))


def batch(n=4):
    return torch.full((n, 1, 1, 3), 0.5), torch.zeros(n, dtype=torch.long)


def surrogate_pgd(ens, x, y):
    attack = make_attack("pgd", eps=EPS, steps=50, restarts=3)
    return attack(ens.surrogate(), x, y, decide=lambda xb: ens.predict(xb))


def vote_acc(ens, x_adv, y) -> float:
    return (ens.predict(x_adv) == y).float().mean().item()


def unanimous_wrong(ens, x_adv, y) -> float:
    with torch.no_grad():
        preds = ens.member_logits(x_adv).argmax(dim=2)
    return ((preds == preds[:1]).all(dim=0) & (preds[0] != y)).float().mean().item()


def test_coalitions_of_three_members_are_the_pairs_and_the_reference():
    cs = coalitions(3, 2, "decisive")
    assert [(c.targeted, c.away) for c in cs] == [((0, 1), ()), ((0, 2), ()), ((1, 2), ()),
                                                  ((2,), (0,)), ((2,), (1,))]
    five = coalitions(5, 0, "decisive")
    assert len(five) == 10 + 6 and five[-1] == type(five[-1])((0,), (3, 4))
    assert [c.targeted for c in coalitions(3, 2, "all")] == [(0, 1, 2)]


@pytest.mark.parametrize("case", [PAIR_CASE, REFERENCE_CASE], ids=["pair", "reference"])
@pytest.mark.parametrize("name", ["vote-pgd", "vote-apgd"])
def test_aimed_attack_breaks_the_vote_where_surrogate_pgd_fails(case, name):
    ens = ensemble(*case)
    x, y = batch()
    assert vote_acc(ens, x, y) == 1.0
    assert vote_acc(ens, surrogate_pgd(ens, x, y), y) == 1.0, "the case must defeat PGD"
    params = {"steps": 30} if name == "vote-pgd" else {"steps": 30, "targets": 2}
    x_adv = make_attack(name, eps=EPS, **params)(ens, x, y, decide=lambda xb: ens.predict(xb))
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert vote_acc(ens, x_adv, y) == 0.0


def test_aimed_attack_through_the_surrogate_aims_at_the_vote():
    """Given the mean-softmax surrogate (what the evaluator holds), it unwraps the members."""
    ens = ensemble(*PAIR_CASE)
    x, y = batch()
    x_adv = make_attack("vote-pgd", eps=EPS, steps=30)(ens.surrogate(), x, y)
    assert vote_acc(ens, x_adv, y) == 0.0


def test_unanimous_attacker_drives_every_member_to_one_wrong_class():
    ens = ensemble(*UNANIMOUS_CASE)
    x, y = batch()
    assert unanimous_wrong(ens, surrogate_pgd(ens, x, y), y) == 0.0
    x_adv = make_attack("vote-pgd", eps=EPS, steps=30, coalitions="all")(ens, x, y)
    assert unanimous_wrong(ens, x_adv, y) == 1.0


def test_confident_pgd_reaches_a_confident_wrong_answer_where_pgd_does_not():
    # class 1 (pixel a) and class 2 (pixel b) are equally reachable; untargeted PGD raises
    # both and ends on a wrong answer with a top probability of 0.38, the targeted push on
    # class 1 lowers class 2 too and reaches 0.55
    model = Affine([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0.0, -0.5, -0.5])
    x, y = batch()

    def wrong_conf(x_adv):
        with torch.no_grad():
            conf, pred = model(x_adv).softmax(dim=1).max(dim=1)
        return torch.where(pred != y, conf, torch.zeros_like(conf))

    pgd = make_attack("pgd", eps=EPS, steps=100, restarts=5)(model, x, y)
    assert wrong_conf(pgd).max() < 0.5
    x_adv = make_attack("confident-pgd", eps=EPS, steps=30)(model, x, y)
    assert (wrong_conf(x_adv) > 0.5).all()

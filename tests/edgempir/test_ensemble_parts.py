"""The torch ensemble's parts that eval scores and attacks through (edgempir/ensemble.py):
the reject policies, the mean-softmax surrogate, protocol paper's agreeing-members target,
the combiners by name, early exit's refusal, subsets. Written for the survivors of the
mutation run of 2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import json

import pytest
import torch
from linear_member import LinearMember

from edgempir.ensemble import AgreeingMembersAverage, Ensemble, accepted, combine
from edgempir.errors import SpecError
from edgempir.members import parse_spec

SPECS = [parse_spec(s) for s in ("w2a4", "w4a4", "fp32")]  # reference: member 2


def _logits(*members):
    """[M, B, K] from per-member lists of rows."""
    return torch.tensor(members, dtype=torch.float32)


# three members, two images, four classes: image 0 unanimous on class 1; image 1 split
LOGITS = _logits([[0, 9, 0, 0], [0, 0, 9, 0]], [[0, 9, 0, 0], [0, 0, 0, 9]],
                 [[0, 9, 0, 0], [9, 0, 0, 0]])


def test_reject_policies_in_torch_by_value():
    majority, unanimous = json.loads('["majority", "unanimous"]')
    assert accepted(LOGITS, majority).tolist() == [True, True]
    assert accepted(LOGITS, unanimous).tolist() == [True, False]
    for unknown in ("any", "strict", "zealous"):
        with pytest.raises(SpecError, match=f"unknown reject policy '{unknown}'"):
            accepted(LOGITS, unknown)


def test_combiners_by_value_and_unknown_names():
    vote, mean_softmax, mean_logits = json.loads('["vote", "mean-softmax", "mean-logits"]')
    assert combine(LOGITS, vote, 2).argmax(1).tolist() == [1, 0]        # the reference decides 1
    assert torch.allclose(combine(LOGITS, mean_softmax, 2), LOGITS.softmax(2).mean(0))
    assert torch.allclose(combine(LOGITS, mean_logits, 2), LOGITS.mean(0))
    for unknown in ("average", "zzz"):  # before and after the names
        with pytest.raises(SpecError, match=f"unknown combiner '{unknown}'"):
            combine(LOGITS, unknown, 2)


def _ensemble(combiner="vote", seed=0) -> Ensemble:
    g = torch.Generator().manual_seed(seed)
    return Ensemble([LinearMember(torch.randn(4, 5, generator=g) * 4) for _ in SPECS], SPECS, combiner)


def test_the_surrogate_is_the_log_of_the_mean_softmax():
    ens = _ensemble()  # 3 members, 5 classes: dividing by either count differs
    x = torch.rand(6, 1, 2, 2)
    want = ens.member_logits(x).softmax(dim=2).mean(dim=0)
    assert torch.allclose(ens.surrogate()(x).exp(), want, atol=1e-6)


def test_the_agreeing_members_target_averages_those_that_vote_the_decision():
    ens = _ensemble(seed=1)
    x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    logits = ens.member_logits(x)
    probs, preds = logits.softmax(dim=2), logits.argmax(dim=2)
    decision = ens.predict(x)
    got = AgreeingMembersAverage(ens)(x)
    kinds = set()
    for b in range(len(x)):
        agree = [m for m in range(3) if preds[m, b] == decision[b]]
        kinds.add(len(agree))
        assert torch.allclose(got[b], probs[agree, b].mean(dim=0), atol=1e-6), b
    assert kinds == {1, 2, 3}  # no majority (the reference alone), a pair, all three


def test_ensemble_refusals_and_subsets():
    members = [LinearMember(torch.ones(4, 3)) for _ in range(3)]
    for specs in (SPECS[:2], SPECS + SPECS[:1]):
        with pytest.raises(ValueError, match="one spec per member"):
            Ensemble(members, specs)
    ens = Ensemble(members, SPECS, "mean-softmax")
    with pytest.raises(SpecError, match="early exit is a property of the vote"):
        ens.predict_early_exit(torch.rand(2, 1, 2, 2))
    assert ens.subset([0, 2]).combiner == "mean-softmax"
    assert ens.subset([0, 2], "vote").combiner == "vote"
    voting = _ensemble(json.loads('"vote"'))  # the combiner as a run manifest gives it
    x = torch.rand(8, 1, 2, 2)
    ids, ran = voting.predict_early_exit(x)
    assert ids.tolist() == voting.predict(x).tolist() and ran.shape == (3, 8)

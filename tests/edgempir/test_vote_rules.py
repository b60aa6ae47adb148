"""The numpy vote's details that a published number rests on (edgempir/vote.py): absent
votes, class 0, NaN logits, the early exit's skipping with the reference anywhere and with
an even or a large ensemble, and its refusals. Written for the survivors of the mutation
run of 2026-12-01 (docs/TESTING.md)."""
import json

import numpy as np
import pytest
from vote_cases import logits_for

from edgempir.vote import (
    NOT_RUN,
    accepted,
    cascade,
    cascade_from_logits,
    member_preds,
    vote,
    vote_preds,
)


def test_an_absent_vote_is_no_vote_for_any_class():
    # member 1 did not run: 2 (m0) against 0 (the reference): no majority, the reference
    # decides; an absent vote counted as the last class would make 2 a majority
    assert vote_preds(np.array([[2], [NOT_RUN], [0]]), 2, 3).tolist() == [0]


def test_a_majority_for_class_zero_beats_the_reference():
    assert vote_preds(np.array([[0, 1], [0, 1], [1, 0]]), 2, 3).tolist() == [0, 1]
    assert vote(logits_for([[0], [0], [1]]), 2).tolist() == [0]


def test_a_nan_logit_never_wins_and_an_all_nan_row_is_an_absent_vote():
    logits = np.array([[[np.nan, 1.0, 2.0], [np.nan] * 3, [np.nan, -1.0, -2.0]]],
                      dtype=np.float32)
    assert member_preds(logits).tolist() == [[2, NOT_RUN, 1]]


def _ran(preds, ref, order, classes=4):
    logits = logits_for(preds, classes)
    ids, ran = cascade_from_logits(logits, order, ref)
    assert ids.tolist() == vote(logits, ref).tolist()
    return ran.astype(int).tolist()


def test_a_reference_that_is_not_the_last_member_still_lets_others_be_skipped():
    # M = 5, reference 0 run last: after 1-1-1 no class can reach 3 of 5 without it, so the
    # fourth member in the order (member 4) is skipped
    assert _ran([[0], [0], [1], [2], [3]], 0, [1, 2, 3, 4, 0]) == [[1], [1], [1], [1], [0]]


def test_an_even_ensemble_skips_where_a_majority_is_out_of_reach():
    # M = 4: 1-1 after two: even the third member's vote makes no strict majority (2 of 4),
    # so the reference decides; 2-0 after two: the third can make 3 of 4
    assert _ran([[0], [1], [0], [1]], 3, [0, 1, 2, 3]) == [[1], [1], [0], [1]]
    assert _ran([[0], [0], [0], [1]], 3, [0, 1, 2, 3]) == [[1], [1], [1], [0]]


def test_seven_members_run_the_fifth_while_three_votes_are_no_majority():
    assert _ran([[0], [0], [0], [1], [0], [1], [1]], 6, list(range(7))) == \
        [[1], [1], [1], [1], [1], [0], [0]]
    # four different votes: even the two non-reference votes left make 3 of 7 at most,
    # so members 4 and 5 are skipped and the reference decides
    assert _ran([[0], [1], [2], [3], [4], [5], [6]], 6, list(range(7)), classes=8) == \
        [[1], [1], [1], [1], [0], [0], [1]]


def test_a_numpy_integer_reference_is_the_same_reference():
    logits = logits_for([[0, 1], [1, 1], [2, 0]])
    ids, ran = cascade_from_logits(logits, [0, 1, 2], np.int64(2))
    assert ids.tolist() == [2, 1] and ran.astype(int).tolist() == [[1, 1], [1, 1], [1, 0]]


@pytest.mark.parametrize("order, ref", [([2, 1, 0], 2), ([0, 0, 2], 2), ([0, 2], 2),
                                        ([1, 0, 2, 3], 2), ([0, 1, 2], 0), ([1, 2, 0], 1)])
def test_an_order_that_is_not_every_member_once_with_the_reference_last_is_refused(order, ref):
    with pytest.raises(ValueError, match="reference last"):
        cascade(lambda i, rows: np.zeros((len(rows), 3)), 2, 3, order, ref)


def test_an_empty_batch_runs_no_member():
    ids, logits, ran = cascade(lambda i, rows: pytest.fail("ran a member"), 0, 3, [0, 1, 2], 2)
    assert ids.shape == (0,) and logits.shape == (3, 0, 1) and ran.shape == (3, 0)


def test_reject_policies_by_value_not_by_identity():
    # a policy name read from a manifest is an equal string, not the same object
    logits = logits_for([[0, 1], [0, 2], [0, 1]])
    majority, unanimous = json.loads('["majority", "unanimous"]')
    assert accepted(logits, majority).tolist() == [True, True]
    assert accepted(logits, unanimous).tolist() == [True, False]
    for unknown in ("strict", "any", "zealous"):  # before, between and after the two names
        with pytest.raises(ValueError, match=f"unknown reject policy '{unknown}'"):
            accepted(logits, unknown)

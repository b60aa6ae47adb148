"""The early-exit vote (edgempir.vote.cascade): the full vote's decisions, fewer members run.

Hand-made cases hit every branch of the rule, for M = 3 and M = 5; the same cases run
through the ONNX graph in tests/targets/test_graph.py.
"""
import numpy as np
import pytest
import torch
from vote_cases import CASES, logits_for

from edgempir.contract import cascade_order
from edgempir.ensemble import Ensemble
from edgempir.members import parse_members
from edgempir.vote import cascade, cascade_from_logits, vote


def _order(m, ref):
    return [i for i in range(m) if i != ref] + [ref]


@pytest.mark.parametrize("preds, ref, ran", CASES)
def test_numpy_cascade_is_the_full_vote_and_runs_only_what_matters(preds, ref, ran):
    logits = logits_for(preds, classes=4)
    ids, got_ran = cascade_from_logits(logits, _order(len(preds), ref), ref)
    assert ids.tolist() == vote(logits, ref).tolist()
    assert got_ran.astype(int).tolist() == ran


def test_numpy_cascade_reads_only_the_rows_it_runs():
    """A member's logits on rows it was not asked for never reach the decision."""
    logits = logits_for([[1, 0], [1, 2], [3, 3]], classes=4)
    asked = {}

    def run_member(i, rows):
        asked[i] = rows.tolist()
        return logits[i, rows]

    ids, out, _ = cascade(run_member, 2, 3, [0, 1, 2], 2)
    assert asked == {0: [0, 1], 1: [0, 1], 2: [1]}
    assert ids.tolist() == [1, 3]
    assert np.isnan(out[2, 0]).all() and not np.isnan(out[2, 1]).any()


@pytest.mark.parametrize("m, ref", [(3, 2), (3, 0), (5, 4), (5, 1), (4, 3), (2, 1), (1, 0)])
def test_numpy_cascade_on_random_logits(m, ref):
    logits = np.random.default_rng(m + ref).normal(size=(m, 400, 4)).astype(np.float32)
    ids, ran = cascade_from_logits(logits, _order(m, ref), ref)
    assert np.array_equal(ids, vote(logits, ref))
    assert ran[ref].any() and (m < 3 or not ran[ref].all())


def test_cascade_order_is_cheapest_first_and_the_reference_last():
    assert cascade_order(parse_members("w2a4,w2a4,fp32")) == [0, 1, 2]
    assert cascade_order(parse_members("fp32,w4a4,w2a4")) == [2, 1, 0]
    assert cascade_order(parse_members("fp32,fp32,w2a4")) == [2, 1, 0]


class Table(torch.nn.Module):
    """A member whose logits for image r are row r of a fixed table (x holds r)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.from_numpy(logits)
        self.calls = []

    def forward(self, x):
        rows = x[:, 0].long()
        self.calls.append(rows.tolist())
        return self.logits[rows]


@pytest.mark.parametrize("preds, ref, ran", CASES)
def test_torch_early_exit_predicts_the_vote(preds, ref, ran):
    logits = logits_for(preds, classes=4)
    m, b = len(preds), len(preds[0])
    specs = ["w2a4"] * (m - 1) + ["fp32"]
    members = [Table(logits[i]) for i in range(m)]
    ens = Ensemble(members, parse_members(",".join(specs)))
    x = torch.arange(b, dtype=torch.float32).reshape(b, 1)
    ids, got_ran = ens.predict_early_exit(x)
    assert ids.tolist() == ens.predict(x).tolist() == vote(logits, ref).tolist()
    assert got_ran.int().tolist() == ran
    # the reference member saw only the rows it was needed for
    assert members[ref].calls[0] == [r for r in range(b) if ran[ref][r]] or not any(ran[ref])

"""The vote rule, pinned on hand-made cases, in torch and numpy alike."""
import numpy as np
import pytest
import torch
from vote_cases import logits_for

from edgempir.ensemble import Ensemble, combine, vote_scores
from edgempir.members import parse_members
from edgempir.vote import vote

# (member predictions [M][B], reference index, expected decisions [B])
CASES = [
    # 2 of 3 agree -> majority wins, whichever member is the odd one out
    ([[1, 2, 3], [1, 0, 3], [0, 2, 0]], 2, [1, 2, 3]),
    # all disagree -> the reference (fp32) member decides
    ([[0, 1], [1, 2], [2, 3]], 2, [2, 3]),
    ([[0, 1], [1, 2], [2, 3]], 0, [0, 1]),
    # unanimous
    ([[3], [3], [3]], 1, [3]),
    # two members: a 1-1 split is no majority -> reference
    ([[0, 1], [2, 1]], 1, [2, 1]),
    # four members, 2-2 tie is no strict majority -> reference; 3 of 4 wins
    ([[0, 0], [0, 0], [1, 0], [1, 2]], 3, [1, 0]),
]


@pytest.mark.parametrize("preds, ref, expected", CASES)
def test_vote_rule_numpy(preds, ref, expected):
    assert vote(logits_for(preds), ref).tolist() == expected


@pytest.mark.parametrize("preds, ref, expected", CASES)
def test_vote_rule_torch_matches(preds, ref, expected):
    scores = vote_scores(torch.from_numpy(logits_for(preds)), ref)
    assert scores.argmax(1).tolist() == expected
    assert torch.all(scores.sum(1) == 1)


def test_vote_torch_and_numpy_agree_on_random_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500, 10)).astype(np.float32)
    for ref in range(3):
        assert np.array_equal(vote(logits, ref),
                              vote_scores(torch.from_numpy(logits), ref).argmax(1).numpy())


class Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_ensemble_uses_its_combiner_and_exposes_members():
    member_logits = torch.tensor([[[2.0, 0, 0]], [[0, 2.0, 0]], [[0, 1.0, 3.0]]])
    specs = parse_members("w2a4,w2a4,fp32")
    ens = Ensemble([Fixed(l) for l in member_logits], specs)
    x = torch.zeros(1, 1)
    assert torch.equal(ens.member_logits(x), member_logits)
    assert ens.reference == 2
    assert ens.predict(x).item() == 2  # no majority: fp32 decides
    ms = Ensemble([Fixed(l) for l in member_logits], specs, "mean-softmax")
    assert torch.allclose(ms(x), member_logits.softmax(2).mean(0))
    ml = Ensemble([Fixed(l) for l in member_logits], specs, "mean-logits")
    assert ml.predict(x).item() == 1  # mean logits: [0.67, 1.0, 1.0] -> first max is class 1


def test_surrogate_is_log_mean_softmax_and_differentiable():
    torch.manual_seed(0)
    members = [torch.nn.Linear(5, 3) for _ in range(3)]
    ens = Ensemble(members, parse_members("w2a4,w4a4,fp32"))
    x = torch.randn(4, 5, requires_grad=True)
    out = ens.surrogate()(x)
    expected = torch.stack([m(x) for m in members]).softmax(2).mean(0).log()
    assert torch.allclose(out, expected, atol=1e-6)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_combiner():
    from edgempir.errors import SpecError

    with pytest.raises(SpecError):
        combine(torch.zeros(2, 1, 3), "median", 0)

"""The vote searches stacked into one batch once few images are left
(edgempir/attacks/_vote.py, STACK_ROWS): the same per-image results as one search at a time,
for vote-pgd and vote-apgd; when stacking starts; which search's example an image keeps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgempir.attacks import _vote, make_attack
from edgempir.attacks._vote import aimed_search
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec


class RowByRow(nn.Module):
    """A linear member computed one row at a time: its rows cannot depend on the batch
    (a batched product's rounding may), so one search at a time and stacked must agree to
    the bit."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(12, 4, generator=g) * 2)

    def forward(self, x):
        return torch.stack([row.flatten() @ self.w for row in x])


def _ensemble(m: int = 3) -> Ensemble:
    specs = [parse_spec(s) for s in (["w2a4", "w4a4", "w2a2", "w4a2"][:m - 1] + ["fp32"])]
    return Ensemble([RowByRow(s) for s in range(m)], specs, "vote")


class Counting:
    """Wraps an attack's ascent calls through aimed_search: how many batches ran."""

    def __init__(self, monkeypatch):
        self.batches: list[int] = []
        real = _vote.aimed_search

        def counted(*args, ascent, **kw):
            def wrapped(*a, draws, **k):
                self.batches.append(len(draws))
                return ascent(*a, draws=draws, **k)
            return real(*args, ascent=wrapped, **kw)

        for module in ("vote_pgd", "vote_apgd"):
            monkeypatch.setattr(f"edgempir.attacks.{module}.aimed_search", counted)


@pytest.mark.parametrize("name, params", [
    ("vote-pgd", {"steps": 8, "targets": 2}),
    ("vote-pgd", {"steps": 5, "targets": 3, "random_start": False, "loss": "max"}),
    ("vote-apgd", {"steps": 8, "targets": 2}),
])
@pytest.mark.parametrize("m", [3, 5])  # (an even count has two floors: never stacked)
def test_stacked_searches_give_each_image_what_one_search_at_a_time_gives(
        monkeypatch, name, params, m):
    ens = _ensemble(m)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(12, 1, 3, 4, generator=g)
    y = ens(x).argmax(dim=1)
    ids = torch.arange(100, 112)
    attack = make_attack(name, eps=0.15, seed=3, **params)
    count = Counting(monkeypatch)
    monkeypatch.setattr(_vote, "STACK_ROWS", 0)
    one_by_one = attack(ens, x, y, ids=ids)
    singles = list(count.batches)
    count.batches.clear()
    monkeypatch.setattr(_vote, "STACK_ROWS", 10**6)
    stacked = attack(ens, x, y, ids=ids)
    assert torch.equal(stacked, one_by_one)
    # the comparison means something: some images broken, some not, and the searches ran
    # one by one in the first run and as one batch in the second
    broken = ens(one_by_one).argmax(dim=1) != y
    assert 0 < int(broken.sum()) < len(y), broken
    assert set(singles) == {1} and len(singles) > 1 and count.batches == [len(singles)]


class Scripted:
    """An ascent that breaks image i in search s when ``(s, i)`` is in ``breaks``; its
    example for every image marks the search (x + 0.01 * (s + 1))."""

    def __init__(self, breaks: set[tuple[int, int]]):
        self.breaks, self.calls, self.seen = breaks, [], 0

    def __call__(self, logits_fn, loss_fn, success, xs, floor, draws):
        self.calls.append([search for _, search in draws])
        outs, hits = [], []
        for rows, _ in draws:
            s = self.seen
            self.seen += 1
            outs.append(torch.full((len(rows), *xs.shape[1:]), 0.5 + 0.01 * (s + 1)))
            hits.append(torch.tensor([(s, int(i)) in self.breaks for i in rows]))
        return torch.cat(outs), torch.cat(hits)


def _scripted(breaks, stack_rows, n=3, decide=None):
    ens = _ensemble()
    x, y = torch.full((n, 1, 3, 4), 0.5), torch.zeros(n, dtype=torch.long)
    asc = Scripted(breaks)
    best = aimed_search(ens, x, y, decide, mode="decisive", n_targets=2, kappa=1.0,
                        reduce="sum", ascent=asc, stack_rows=stack_rows)
    return best[:, 0, 0, 0], asc.calls


@pytest.mark.parametrize("stack_rows", [0, 12, 10**6])
def test_an_image_keeps_the_first_search_that_broke_it_else_the_last_ones(stack_rows):
    # image 0 broken by searches 2 and 6, image 1 by 7 only, image 2 never (10 searches)
    best, calls = _scripted({(2, 0), (6, 0), (7, 1)}, stack_rows)
    assert torch.allclose(best, torch.tensor([0.53, 0.58, 0.60]))
    if stack_rows == 0:
        assert [len(c) for c in calls] == [1] * 10
    elif stack_rows == 12:
        # 3 images x 10 searches do not fit; once search 2 broke image 0, 2 images x 6
        # searches do after search 4
        assert [len(c) for c in calls] == [1] * 4 + [6]
        assert calls[-1] == [(2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1)]
    else:
        assert [len(c) for c in calls] == [10]


def test_the_callers_decision_is_asked_for_every_stacked_example():
    """A search's success that the deployed decision denies is no success (image 0's search
    2); the next search that breaks it counts."""
    denied = torch.tensor(0.5 + 0.03)

    def decide(xb):  # wrong (class 1) except for the example of search 2
        return (xb[:, 0, 0, 0] - denied).abs().gt(1e-6).long()

    best, calls = _scripted({(2, 0), (6, 0)}, 10**6, decide=decide)
    assert len(calls) == 1 and float(best[0]) == pytest.approx(0.57)


def test_searches_with_different_floors_are_not_stacked():
    """Four members: the triples' floor is 3 clipped terms, the reference's coalitions' 2
    (an ascent has one floor per batch), so the two kinds never share a batch; the
    reference's three, left alone, do."""
    ens = _ensemble(4)
    x, y = torch.full((2, 1, 3, 4), 0.5), torch.zeros(2, dtype=torch.long)
    asc = Scripted(set())
    aimed_search(ens, x, y, None, mode="decisive", n_targets=1, kappa=1.0, reduce="sum",
                 ascent=asc, stack_rows=10**6)
    assert [len(c) for c in asc.calls] == [1] * 4 + [3]  # 4 triples, 3 reference coalitions
    asc = Scripted(set())
    aimed_search(ens, x, y, None, mode="decisive", n_targets=1, kappa=1.0, reduce="max",
                 ascent=asc, stack_rows=10**6)
    assert [len(c) for c in asc.calls] == [7]  # "max": one floor


def test_brevitas_members_give_the_same_examples_stacked_as_one_search_at_a_time(monkeypatch):
    """The members eval attacks (the paper's MNIST net, w2a4/w4a4/fp32, Brevitas; inside
    eval's batch_independent as eval runs them): stacking changes only the batches, and a
    member's rows do not depend on them (eval/shard.py)."""
    from edgempir.eval.shard import batch_independent
    from edgempir.models import build_model

    torch.manual_seed(0)
    specs = [parse_spec(s) for s in ("w2a4", "w4a4", "fp32")]
    members = [build_model("mnist", s, (1, 28, 28), 10).eval() for s in specs]
    ens = Ensemble(members, specs, "vote")
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    attack = make_attack("vote-pgd", eps=0.3, seed=2, steps=3, targets=2)
    ids = torch.arange(6)
    with batch_independent(members):
        monkeypatch.setattr(_vote, "STACK_ROWS", 0)
        one_by_one = attack(ens, x, y, ids=ids)
        monkeypatch.setattr(_vote, "STACK_ROWS", 10**6)
        stacked = attack(ens, x, y, ids=ids)
    assert torch.equal(stacked, one_by_one)
    assert not torch.equal(stacked, x)

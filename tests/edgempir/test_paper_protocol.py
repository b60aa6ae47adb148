"""Protocol paper runs the attacks as the EMPIR reference code did.

A hand-built ensemble of three linear members: members 0 and 2 (the reference, fp32) predict
class 0, member 1 predicts class 1, the true label is 2. The vote is 0; the reference's
FGSM on the ensemble ascends cross-entropy(softmax(mean of the *agreeing* members' softmax),
vote label) (``combinedAvgCorrectProb`` with CleverHans' ``model_loss``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgempir.ensemble import AgreeingMembersAverage, Ensemble
from edgempir.members import parse_members
from edgempir.robustness import CONFIGS, Evaluator

EPS = 0.1


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


def hand_built(seed: int = 3) -> Ensemble:
    g = torch.Generator().manual_seed(seed)
    biases = ([4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [4.0, 0.0, 0.0])  # m0 and m2 agree on 0
    members = [Linear(torch.randn(16, 3, generator=g), torch.tensor(b)) for b in biases]
    return Ensemble(members, parse_members("w2a4,w2a4,fp32")).eval()


def evaluator(ens, tmp_path, x, y, plan_names=("fgsm",)):
    cfg = CONFIGS[("paper", "quick")]
    plan = tuple(p for p in cfg.plan if p.name in plan_names)
    ev = Evaluator(ens, x, y, np.arange(len(y)), cfg, plan, seed=0, batch_size=64,
                   partial_dir=tmp_path / "partial", run_fingerprint="test", progress=False)
    ev.clean_pred, _, _ = ev.score(x)
    return ev


def fgsm_step(loss_of_x, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of_x(x), x)
    return (x + EPS * grad.sign()).clamp(0, 1)


@pytest.fixture
def case():
    ens = hand_built()
    x = torch.full((1, 1, 4, 4), 0.5)
    y = torch.tensor([2])  # the true label is none of the predictions
    preds = ens.member_logits(x).argmax(dim=2)[:, 0].tolist()
    assert preds == [0, 1, 0] and int(ens(x).argmax(1)) == 0
    return ens, x, y


def test_agreeing_average_leaves_out_the_disagreeing_member(case):
    ens, x, _ = case
    p = ens.member_logits(x).softmax(dim=2)
    torch.testing.assert_close(AgreeingMembersAverage(ens)(x), (p[0] + p[2]) / 2)
    # no majority: only the reference member agrees with the vote
    ens3 = Ensemble([ens.members[0], ens.members[1],
                     Linear(torch.zeros(16, 3), torch.tensor([0.0, 0.0, 4.0]))],
                    ens.specs).eval()
    torch.testing.assert_close(AgreeingMembersAverage(ens3)(x),
                               ens3.member_logits(x).softmax(dim=2)[2])


def test_paper_fgsm_uses_the_agreeing_average_and_the_vote_label(case, tmp_path):
    ens, x, y = case
    ev = evaluator(ens, tmp_path, x, y)
    job = next(j for j in ev.jobs if "ensemble" in j.aims)
    assert job.source == "agreeing" and job.labels == "vote"
    x_adv, _ = ev.run_job(job, EPS, np.ones(1, dtype=bool))

    def probs(x_, members):
        return torch.stack([ens.members[i](x_).softmax(1) for i in members]).mean(0)

    vote_label = torch.tensor([0])
    # the reference: CE on the averaged probabilities as logits, labels the vote's
    want = fgsm_step(lambda v: F.cross_entropy(probs(v, [0, 2]), vote_label, reduction="sum"),
                     x)
    torch.testing.assert_close(x_adv, want, rtol=0, atol=0)
    # and it could have failed: the disagreeing member or the true label change the step
    with_all = fgsm_step(lambda v: F.cross_entropy(probs(v, [0, 1, 2]), vote_label), x)
    with_true = fgsm_step(lambda v: F.cross_entropy(probs(v, [0, 2]), y), x)
    assert not torch.equal(with_all, want) and not torch.equal(with_true, want)


def test_paper_attacks_a_member_alone_with_its_own_prediction(case, tmp_path):
    ens, x, y = case
    ev = evaluator(ens, tmp_path, x, y)
    job = next(j for j in ev.jobs if j.source == "m2")  # quick: the fp32 member alone
    assert job.labels == "own" and job.aims == ["m2"]
    x_adv, _ = ev.run_job(job, EPS, np.ones(1, dtype=bool))
    want = fgsm_step(lambda v: F.cross_entropy(ens.members[2](v), torch.tensor([0])), x)
    torch.testing.assert_close(x_adv, want, rtol=0, atol=0)


def test_paper_bim_on_the_ensemble_and_on_fp32_alone_are_separate_runs(case, tmp_path):
    ens, x, y = case
    ev = evaluator(ens, tmp_path, x, y, plan_names=("bim",))
    keys = sorted(j.key for j in ev.jobs)
    assert keys == ["bim@m2", "bim@m2+vote-labels"]


def test_reference_pgd_takes_its_first_gradient_at_the_unclipped_start():
    from edgempir.attacks import make_attack

    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1)[:, :3]

    x = torch.zeros(4, 1, 2, 2)  # on the border: half the random start lies below 0
    make_attack("pgd-ref", eps=0.3, steps=2, step_size=0.01)(Spy(), x, torch.zeros(4).long())
    assert seen[0].min() < 0        # first gradient taken outside [0, 1], as in CleverHans
    assert seen[1].min() >= 0       # later steps are clipped to [0, 1] and the ball


def test_cw_aborts_early_when_the_loss_stalls():
    from edgempir.attacks import make_attack

    calls = []

    class Flat(nn.Module):  # the margin never moves: the loss stalls at once
        def forward(self, x):
            calls.append(1)
            return torch.tensor([[5.0, 0.0]]).expand(x.shape[0], 2) + 0 * x.flatten(1)[:, :2]

    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.zeros(2).long()
    make_attack("cw", steps=50, abort_early=False)(Flat(), x, y)
    full = len(calls)
    calls.clear()
    out = make_attack("cw", steps=50, abort_early=True)(Flat(), x, y)
    assert len(calls) < full / 5 and torch.equal(out, x)  # failed: the input unchanged

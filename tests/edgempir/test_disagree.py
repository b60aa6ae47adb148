"""The slow-path attack on the early-exit vote (edgempir.attacks.disagree)."""
import pytest
import torch

from edgempir.attacks.base import AttackError
from edgempir.attacks.disagree import SlowPathAttack, disagreement_report, slow_path_attack
from edgempir.ensemble import Ensemble
from edgempir.members import parse_members


class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x.flatten(1) @ self.w


def _ensemble(w0, w1, w2):
    return Ensemble([Linear(w0), Linear(w1), Linear(w2)], parse_members("w2a4,w2a4,fp32"))


def test_attack_drives_the_low_bit_pair_apart_within_eps():
    # two inputs, two classes: member 0 votes by x0 - x1, member 1 by x0 - 0.5 x1 ... both
    # agree on class 0 at x = (0.6, 0.5), and a small step on x1 splits them
    w0 = [[1.0, -1.0], [-1.0, 1.0]]
    w1 = [[1.0, -1.0], [-0.5, 0.5]]
    ens = _ensemble(w0, w1, [[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[[[0.6, 0.55]]], [[[0.9, 0.1]]]])
    _, ran = ens.predict_early_exit(x)
    assert not ran[2].any()  # clean: the pair agrees, no slow path
    small = slow_path_attack(ens, x, 0.01, SlowPathAttack(steps=10))
    big = slow_path_attack(ens, x, 0.1, SlowPathAttack(steps=10))
    assert small["clean_slow_path"] == 0.0 and small["attacked_slow_path"] == 0.0
    # eps 0.1 moves x1 of image 0 past 0.6 (member 0 flips) but not past 1.2 (member 1)
    assert big["attacked_slow_path"] == 0.5
    assert big["members_attacked"] == [0, 1] and big["reference_member"] == 2


def test_report_names_its_protocol_and_restores_the_model():
    ens = _ensemble(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)).train()
    x = torch.rand(20, 1, 2, 2)
    rep = disagreement_report(ens, x, 0.1, "quick", "adaptive", seed=0, batch_size=8)
    assert rep["protocol"] == "adaptive" and "protocol adaptive (quick)" in rep["description"]
    assert rep["attacked_slow_path"] >= rep["clean_slow_path"]
    assert ens.training and all(p.requires_grad for p in ens.parameters())
    assert disagreement_report(Ensemble(ens.members, ens.specs, "mean-softmax"), x, 0.1,
                               "quick", "adaptive", 0, 8) is None


def test_eval_reports_the_slow_path_share_under_protocol_adaptive_only(evaluated_run):
    _, result = evaluated_run
    d = result.reports["adaptive"]["disagreement"]
    assert result.reports["paper"]["disagreement"] is None
    assert d["protocol"] == "adaptive" and d["n"] == 40 and d["eps"] == 0.1
    assert 0.0 <= d["clean_slow_path"] <= d["attacked_slow_path"] <= 1.0
    assert d["members_attacked"] == [0, 1] and d["reference_member"] == 2
    # the suite's overrides shorten it (quick's own: 20 steps), and the report says so
    assert d["attack"]["steps"] == 5 and "5-step PGD x1" in d["description"]
    assert result.reports["adaptive"]["overrides"]["disagree"] == {"steps": 5}
    assert "protocol adaptive (quick)" in d["description"]


def test_settings_change_steps_and_restarts_and_refuse_anything_else():
    ens = _ensemble(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3))
    x = torch.rand(6, 1, 2, 2)
    rep = disagreement_report(ens, x, 0.1, "quick", "adaptive", 0, 8,
                              settings={"steps": 3, "restarts": 2})
    assert rep["attack"]["steps"] == 3 and rep["attack"]["restarts"] == 2
    assert "3-step PGD x2" in rep["description"]
    for bad in ({"step": 3}, {"steps": 0}, {"restarts": 1.5}, {"steps": True}):
        with pytest.raises(AttackError, match="overrides\\['disagree'\\]"):
            disagreement_report(ens, x, 0.1, "quick", "adaptive", 0, 8, settings=bad)

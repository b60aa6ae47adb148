"""The slow-path attack against its specification written out (edgempir/attacks/disagree.py's
docstring): every point it judges, restart by restart and step by step, computed here by
hand (random start per image in the ball, sign ascent on minus the largest summed
probability of the cheaper members, projection), the flags an image gets, and the record.
Written for the survivors of the mutation run of 2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from linear_member import LinearMember, seeded_linear

from edgempir.attacks import disagree as D
from edgempir.attacks.base import per_image_uniform
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec


def _ensemble():
    specs = [parse_spec(s) for s in ("w2a4", "w4a4", "fp32")]   # cascade: 0, 1, then 2
    return Ensemble([seeded_linear(4, 3, s) for s in (1, 2, 3)], specs, "vote").eval()


def _slow(ens, x):
    """The early-exit rule by hand: the reference runs where the cheap pair disagrees."""
    with torch.no_grad():
        return ens.members[0](x).argmax(1) != ens.members[1](x).argmax(1)


def _by_hand(ens, x, ids, eps, cfg):
    """(points judged, in order, for one batch holding all of x; clean flags; attacked)."""
    judged = [x]
    hit = _slow(ens, x)
    clean = hit.clone()
    for r in range(cfg.restarts):
        rows = (~hit).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        x0 = x[rows]
        lo, hi = (x0 - eps).clamp(min=0.0), (x0 + eps).clamp(max=1.0)
        u = per_image_uniform(x0.shape, ids[rows], cfg.seed, "pgd-disagreement", eps, r)
        adv = torch.max(torch.min(x0 + (2 * u - 1) * eps, hi), lo)
        judged.append(adv)
        found = _slow(ens, adv)
        for _ in range(cfg.steps):
            a = adv.detach().requires_grad_(True)
            total = ens.members[0](a).softmax(1) + ens.members[1](a).softmax(1)
            (g,) = torch.autograd.grad(-total.max(dim=1).values.sum(), a)
            adv = torch.max(torch.min(adv + cfg.rel_step * eps * g.sign(), hi), lo)
            judged.append(adv)
            found = found | _slow(ens, adv)
        hit[rows[found]] = True
    return judged, clean, hit


EPS_BRIGHT = 0.05  # at 0.15 every image is pushed onto the slow path


def _images(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if kind == "uniform":
        return torch.rand(24, 1, 2, 2, generator=g)
    # 6 images per bright pixel: their likeliest classes (of the cheap members' summed
    # probabilities) differ, so a loss summed over the batch instead of over the members
    # would step them another way
    bright = torch.eye(4).repeat_interleave(6, 0) * 0.8
    return (bright + 0.2 * torch.rand(24, 4, generator=g)).reshape(24, 1, 2, 2)


@pytest.mark.parametrize("images, eps", [("uniform", 0.15), ("bright-pixel", EPS_BRIGHT)])
def test_every_point_judged_and_every_flag_is_the_specification(monkeypatch, images, eps):
    ens = _ensemble()
    x = _images(images)
    ids = torch.arange(100, 124)
    cfg = D.SlowPathAttack(steps=4, restarts=2, rel_step=0.25, seed=3)
    seen = []
    real = D._on_slow_path

    def recording(e, xb):
        seen.append(xb.detach().clone())
        return real(e, xb)

    monkeypatch.setattr(D, "_on_slow_path", recording)
    clean, attacked = D.slow_path_flags(ens, x, eps, cfg, batch_size=64, ids=ids)
    judged, want_clean, want_attacked = _by_hand(ens, x, ids, eps, cfg)
    assert len(seen) == len(judged)
    for got, want in zip(seen, judged):
        assert torch.allclose(got, want, atol=1e-7, rtol=0)
    assert torch.equal(clean, want_clean) and torch.equal(attacked, want_attacked)
    # the case means something: some clean, some pushed there, some never
    assert 0 < int(clean.sum()) < int(attacked.sum()) < len(x), (clean, attacked)
    # per image: the same flags in batches of 5 (the last one smaller)
    monkeypatch.setattr(D, "_on_slow_path", real)
    again = D.slow_path_flags(ens, x, eps, cfg, batch_size=5, ids=ids)
    assert torch.equal(again[0], clean) and torch.equal(again[1], attacked)


def test_the_record_says_what_ran_on_what():
    ens = _ensemble()
    x = _images("uniform")
    cfg = D.SlowPathAttack(steps=4, restarts=2, rel_step=0.25, seed=3)
    clean, attacked = D.slow_path_flags(ens, x, 0.15, cfg, batch_size=64,
                                        ids=torch.arange(100, 124))
    rec = D.slow_path_summary(ens, clean, attacked, 0.15, cfg)
    assert rec["n"] == 24 and rec["eps"] == 0.15 and rec["norm"] == "Linf"
    assert rec["clean_slow_path"] == pytest.approx(float(clean.float().mean()))
    assert rec["attacked_slow_path"] == pytest.approx(float(attacked.float().mean()))
    assert rec["members_attacked"] == [0, 1] and rec["reference_member"] == 2
    assert rec["attack"] == {"name": "pgd-disagreement", "loss": D.LOSS, "steps": 4,
                             "restarts": 2, "rel_step": 0.25, "seed": 3}
    empty = D.slow_path_summary(ens, torch.zeros(0, dtype=torch.bool),
                                torch.zeros(0, dtype=torch.bool), 0.15, cfg)
    assert empty["n"] == 0 and empty["clean_slow_path"] is None


def test_the_settings_are_the_documented_ones():
    """docs/EVAL.md: "Standard: 100 steps x 2 restarts; quick: 20 x 1; step 0.1 eps"."""
    text = " ".join((Path(__file__).parents[2] / "docs" / "EVAL.md").read_text().split())
    found = re.search(r"Standard: (\d+) steps x (\d+) restarts; quick: (\d+) x (\d+); "
                      r"step ([\d.]+) eps", text)
    assert found, "docs/EVAL.md no longer states the slow-path settings"
    s_steps, s_restarts, q_steps, q_restarts, rel = found.groups()
    assert (D.CONFIGS["standard"].steps, D.CONFIGS["standard"].restarts) == \
        (int(s_steps), int(s_restarts))
    assert (D.CONFIGS["quick"].steps, D.CONFIGS["quick"].restarts) == (int(q_steps),
                                                                        int(q_restarts))
    assert D.CONFIGS["quick"].rel_step == D.CONFIGS["standard"].rel_step == float(rel)
    assert D.SlowPathAttack().seed == 0


def test_one_step_is_a_setting_and_no_image_gives_empty_flags():
    ens = _ensemble()
    rep = D.disagreement_report(ens, torch.rand(4, 1, 2, 2), 0.1, "quick", "adaptive", 0, 8,
                                settings={"steps": 1, "restarts": 1})
    assert rep["attack"]["steps"] == 1 and rep["attack"]["restarts"] == 1
    clean, attacked = D.slow_path_flags(ens, torch.rand(0, 1, 2, 2), 0.1, D.SlowPathAttack())
    assert clean.shape == (0,) and attacked.shape == (0,)


def flat(seed: int) -> LinearMember:
    """A member blind to pixel 3 (its gradient there is 0)."""
    member = seeded_linear(4, 3, seed)
    with torch.no_grad():
        member.w[3] = 0.0
    return member


def test_a_pixel_without_gradient_stays_where_the_start_put_it(monkeypatch):
    specs = [parse_spec(s) for s in ("w2a4", "w4a4", "fp32")]
    ens = Ensemble([flat(s) for s in (1, 2, 3)], specs, "vote").eval()
    x = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(8))
    ids, cfg = torch.arange(12), D.SlowPathAttack(steps=3, restarts=1, rel_step=0.25, seed=1)
    seen = []
    real = D._on_slow_path
    monkeypatch.setattr(D, "_on_slow_path", lambda e, xb: seen.append(xb.clone()) or real(e, xb))
    D.slow_path_flags(ens, x, 0.15, cfg, batch_size=64, ids=ids)
    judged, _, _ = _by_hand(ens, x, ids, 0.15, cfg)
    assert len(seen) == len(judged) > 2
    for got, want in zip(seen, judged):
        assert torch.equal(got.flatten(1)[:, 3], want.flatten(1)[:, 3])


def test_a_reference_first_and_a_combiner_read_from_json():
    specs = [parse_spec(s) for s in ("fp32", "w2a4", "w4a4")]       # the reference is member 0
    ens = Ensemble([seeded_linear(4, 3, s) for s in (3, 1, 2)], specs, json.loads('"vote"')).eval()
    rep = D.disagreement_report(ens, torch.rand(6, 1, 2, 2), 0.1, "quick", "adaptive", 0, 8)
    assert rep is not None and rep["reference_member"] == 0
    assert sorted(rep["members_attacked"]) == [1, 2]

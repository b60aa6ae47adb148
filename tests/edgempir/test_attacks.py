"""Attacks: threat model (eps ball, [0, 1]), strength on an undefended model, errors.

Parametrised over the registry: a new attack gets these checks for free.
"""
from __future__ import annotations

import math

import pytest
import torch

from edgempir.attacks import REGISTRY, AttackError, make_attack

# small settings per attack so that the whole file runs in seconds
FAST = {
    "fgsm": {},
    "bim": {"steps": 10, "step_size": 0.03},
    "pgd": {"steps": 10, "restarts": 2},
    "pgd-ref": {"steps": 10},
    "cw": {"steps": 20},
    "apgd-ce": {"steps": 10},
    "apgd-t": {"steps": 5, "target_classes": 2},
    "fab-t": {"steps": 5, "target_classes": 2},
    "square": {"n_queries": 50},
    "vote-pgd": {"steps": 10},
    "vote-apgd": {"steps": 10, "targets": 2},
    "confident-pgd": {"steps": 10},
}
TOL = 1e-6  # x + eps - x in float32 can exceed eps by an ulp


def test_every_registered_attack_has_fast_settings():
    assert set(FAST) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_attack_stays_in_eps_ball_and_unit_range(name, tiny_model, tiny_batch):
    x, y = tiny_batch
    cls = REGISTRY[name]
    eps = 1.5 if cls.norm == "L2" else 0.1
    x_in = x.clone()
    x_adv = make_attack(name, eps=eps, **FAST[name])(tiny_model, x, y)
    assert torch.equal(x, x_in), "the attack must not modify its input"
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if cls.norm == "Linf":
        assert delta.abs().max() <= eps + TOL
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-4
    # frozen during the call, restored after: parameters train again, mode unchanged
    assert all(p.requires_grad for p in tiny_model.parameters())
    assert not tiny_model.training


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.norm == "Linf"))
def test_attack_at_range_edges_stays_in_unit_range(name, tiny_model):
    x = torch.cat([torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)])
    y = torch.tensor([0, 1, 2, 3])
    x_adv = make_attack(name, eps=0.2, **FAST[name])(tiny_model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.2 + TOL


def test_unbounded_cw_stays_in_unit_range_and_succeeds(tiny_model, tiny_batch):
    """CW as the paper ran it (no eps) finds adversarial examples on a small model."""
    x, y = tiny_batch
    x_adv = make_attack("cw", eps=None, steps=50)(tiny_model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        fooled = tiny_model(x_adv).argmax(1) != y
    assert fooled.float().mean() >= 0.9
    # minimal-perturbation attack: successful examples are close, failures untouched
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    assert (l2[fooled] > 0).all() and l2[fooled].median() < 3.0
    assert torch.equal(x_adv[~fooled], x[~fooled])


def test_pgd_drives_undefended_model_to_zero_at_large_eps(tiny_model, tiny_batch):
    x, y = tiny_batch
    x_adv = make_attack("pgd", eps=0.3, steps=20)(tiny_model, x, y)
    with torch.no_grad():
        acc = (tiny_model(x_adv).argmax(1) == y).float().mean().item()
    assert acc <= 0.02


def test_fgsm_is_one_signed_gradient_step(tiny_model, tiny_batch):
    x, y = tiny_batch
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(tiny_model(xg), y, reduction="sum").backward()
    expected = (x + 0.05 * xg.grad.sign()).clamp(0, 1)
    assert torch.allclose(make_attack("fgsm", eps=0.05)(tiny_model, x, y), expected)


def test_pgd_is_seeded_and_restarts_use_the_decision(tiny_model, tiny_batch):
    x, y = tiny_batch
    a = make_attack("pgd", eps=0.05, steps=3, restarts=1, seed=7)
    assert torch.equal(a(tiny_model, x, y), a(tiny_model, x, y))
    calls = []

    def never_fooled(xb):  # a defence that always answers right: every restart must run
        calls.append(len(xb))
        return y[: len(xb)]

    make_attack("pgd", eps=0.05, steps=2, restarts=3)(tiny_model, x, y, decide=never_fooled)
    assert calls == [len(x), len(x)]  # judged after restarts 1 and 2, on every sample


def test_cw_respects_an_l2_bound(tiny_model, tiny_batch):
    x, y = tiny_batch
    x_adv = make_attack("cw", eps=0.5, steps=20)(tiny_model, x, y)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("eps", [0, -0.1, 1.01, 2, math.nan, "abc"])
def test_bad_eps_is_a_clear_error(eps):
    with pytest.raises(AttackError, match="eps"):
        make_attack("pgd", eps=eps)


def test_unknown_attack_and_parameter_are_clear_errors():
    with pytest.raises(AttackError, match="unknown attack 'deepfool'.*known attacks: fgsm"):
        make_attack("deepfool", eps=0.1)
    with pytest.raises(AttackError, match="no parameter 'stepz'"):
        make_attack("pgd", eps=0.1, stepz=3)
    with pytest.raises(AttackError, match="needs an eps"):
        make_attack("pgd")


def test_names_accept_underscores():
    assert make_attack("apgd_ce", eps=0.1).name == "apgd-ce"

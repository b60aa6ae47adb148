"""The attack base class's contract (edgempir/attacks/base.py): what ``__call__`` refuses,
what it restores, the final projection for both norms, the printed form, and the per-image
noise that makes every attack's result independent of batches and ranks (pinned to its
values: a published figure is reproduced only with the same draws). Written for the
survivors of the mutation run of 2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgempir.attacks import make_attack
from edgempir.attacks.base import AttackError, check_eps, frozen, per_image_uniform, project


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("x, y, ids, needle", [
    (torch.rand(2, 4), torch.zeros(2), None, "x [B, C, H, W]"),
    (torch.rand(2, 1, 1, 2, 2), torch.zeros(2), None, "x [B, C, H, W]"),
    (torch.rand(2, 1, 2, 2), torch.zeros(3), None, "y [B]"),
    (torch.rand(2, 1, 2, 2), torch.zeros(1), None, "y [B]"),
    (torch.rand(2, 1, 2, 2), torch.zeros(2), torch.arange(3), "ids must be [B]"),
    (torch.rand(2, 1, 2, 2), torch.zeros(2), torch.arange(1), "ids must be [B]"),
    (torch.rand(2, 1, 2, 2) - 0.5, torch.zeros(2), None, "in [0, 1]"),
    (torch.rand(2, 1, 2, 2) + 0.5, torch.zeros(2), None, "in [0, 1]"),
])
def test_call_refuses_what_is_not_a_batch_of_images(x, y, ids, needle):
    attack = make_attack("fgsm", eps=0.1)
    with pytest.raises(ValueError, match=needle.replace("[", "\\[")):
        attack(_model(), x, y.long(), ids=ids)


def test_one_image_with_its_id_is_attacked():
    model = _model()
    x = torch.full((1, 1, 2, 2), 0.5)
    y = model(x).argmax(dim=1)
    out = make_attack("pgd", eps=0.2, steps=3)(model, x, y, ids=torch.tensor([7]))
    assert not torch.equal(out, x)


def test_an_attack_needs_an_eps_and_names_its_parameters():
    with pytest.raises(AttackError, match="needs an eps"):
        make_attack("pgd")
    with pytest.raises(AttackError, match="its parameters are .*restarts.*steps"):
        make_attack("pgd", eps=0.1, stpes=3)


def test_eps_bounds_per_norm():
    assert make_attack("pgd", eps=1.0).eps == 1.0               # the whole range, allowed
    with pytest.raises(AttackError, match=r"outside \(0, 1\]"):
        make_attack("pgd", eps=1.5)
    with pytest.raises(AttackError, match=r"outside \(0, inf\)"):
        make_attack("cw", eps=-1.0)
    linf, l2 = json.loads('["Linf", "L2"]')  # norms read from a report
    assert check_eps(1.0, linf) == 1.0 and check_eps(5.0, l2) == 5.0
    with pytest.raises(AttackError, match=r"outside \(0, 1\]"):
        check_eps(2.0, linf)


def test_uniform_draws_per_image_with_ids_and_from_the_generator_without():
    attack = make_attack("pgd", eps=0.1, seed=3)
    attack.ids = None
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(attack.uniform((2, 3), None, gen, "start"),
                       torch.rand((2, 3), generator=torch.Generator().manual_seed(1)))
    attack.ids = torch.tensor([4, 9])
    assert torch.equal(attack.uniform((1, 3), torch.tensor([1]), gen, "start"),
                       per_image_uniform((1, 3), torch.tensor([9]), 3, "pgd", 0.1, "start"))


def test_an_empty_batch_comes_back_empty_and_the_model_as_it_was():
    model = _model().train()
    model[1].bias.requires_grad_(False)  # a frozen parameter stays frozen
    out = make_attack("pgd", eps=0.1, steps=2)(model, torch.rand(0, 1, 2, 2),
                                               torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 1, 2, 2)
    make_attack("pgd", eps=0.1, steps=2)(model, torch.rand(3, 1, 2, 2),
                                         torch.zeros(3, dtype=torch.long))
    assert model.training and model[1].weight.requires_grad
    assert not model[1].bias.requires_grad
    with frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_projection_into_each_ball_and_the_image_range():
    x = torch.full((2, 1, 2, 2), 0.5)
    far = x + torch.tensor([0.4, -0.3, 0.0, 0.1]).view(1, 1, 2, 2)
    assert torch.allclose(project(x, far, 0.2, "Linf")[0].flatten(),
                          torch.tensor([0.7, 0.3, 0.5, 0.6]))
    l2 = project(x, far, 0.25, "L2")
    assert torch.allclose((l2 - x).flatten(1).norm(dim=1), torch.tensor([0.25, 0.25]))
    delta = torch.tensor([0.4, -0.3, 0.0, 0.1])
    assert torch.allclose((l2 - x)[0].flatten(), delta * 0.25 / delta.norm())  # its direction
    near = x + 0.01
    assert torch.equal(project(x, near, 0.25, "L2"), near)  # inside: unchanged
    assert torch.equal(project(x, x, 0.25, "L2"), x)        # zero delta: no NaN
    assert project(x, x + 0.9, None, "L2").max() == 1.0     # unbounded: the range only
    assert project(x, x - 0.9, None, "L2").min() == 0.0
    linf = json.loads('"Linf"')                             # a norm read from a report
    assert torch.equal(project(x, far, 0.2, linf), project(x, far, 0.2, "Linf"))


def test_the_printed_form_names_the_parameters_not_the_name():
    text = repr(make_attack("pgd", eps=0.1, steps=3))
    assert text.startswith("PGD(norm='Linf', eps=0.1, seed=0, ") and "steps=3" in text
    assert "name=" not in text


def test_per_image_noise_is_pinned_and_the_same_in_any_batch():
    got = per_image_uniform((2, 3), torch.tensor([5, 123]), 0, "pgd", 0.1, "start")
    want = torch.tensor([[0.08546143770217896, 0.37193769216537476, 0.32092416286468506],
                         [0.8597382307052612, 0.9627204537391663, 0.8258064985275269]])
    assert torch.equal(got, want)
    alone = per_image_uniform((1, 3), torch.tensor([123]), 0, "pgd", 0.1, "start")
    assert torch.equal(alone[0], got[1])
    other_key = per_image_uniform((1, 3), torch.tensor([123]), 0, "pgd", 0.1, "restart")
    assert not torch.equal(other_key[0], got[1])

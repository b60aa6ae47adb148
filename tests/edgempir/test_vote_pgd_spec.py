"""vote-pgd against its specification written out (edgempir/attacks/vote_pgd.py): the random
start of each search, and sign_descent as an independent per-image loop (projected sign
steps, the lowest-loss successful iterate kept, a sample leaving at the loss's floor, the
last iterate where nothing succeeded). Written for the survivors of the mutation run of
2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import torch
from torch import nn

from edgempir.attacks import make_attack
from edgempir.attacks._vote import Coalition, coalition_loss
from edgempir.attacks.base import per_image_uniform
from edgempir.attacks.vote_pgd import sign_descent
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec

KAPPA = 1.0
COALITION = Coalition((0, 1))
FLOOR = -2 * KAPPA


def _members(seed: int = 0) -> torch.Tensor:
    """Three linear members [M, pixels, classes] over 4 pixels and 3 classes."""
    return torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(seed)) * 3


def _problem(n=8, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    w = _members(seed)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    t = (y + 1) % 3

    def logits_fn(xb):
        return torch.einsum("bp,mpk->mbk", xb.flatten(1), w)

    def loss_fn(logits, rows):
        return coalition_loss(COALITION, logits, y[rows], t[rows], KAPPA, "sum")

    def success(logits, rows):  # a majority of the three members on a wrong class
        return ((logits.argmax(dim=2) != y[rows]).sum(dim=0) >= 2)
    start = (x + (2 * torch.rand(x.shape, generator=g) - 1) * 0.2).clamp(0, 1)
    return x, start, logits_fn, loss_fn, success


def _by_hand(logits_fn, loss_fn, success, x, start, eps, step, steps, floor):
    """The specification, one image at a time."""
    found, hit = [], []
    for i in range(len(x)):
        row = torch.tensor([i])
        lo, hi = (x[i:i + 1] - eps).clamp(min=0.0), (x[i:i + 1] + eps).clamp(max=1.0)
        point = torch.max(torch.min(start[i:i + 1], hi), lo)
        best, best_loss, ok_any = None, float("inf"), False
        for k in range(steps + 1):
            p = point.detach().requires_grad_(True)
            logits = logits_fn(p)
            ok = bool(success(logits.detach(), row)[0])
            loss = loss_fn(logits, row)
            (grad,) = torch.autograd.grad(loss.sum(), p)
            loss = loss.detach()
            if ok and float(loss) < best_loss:
                best, best_loss, ok_any = point.clone(), float(loss), True
            if (ok and float(loss) <= floor + 1e-6) or k == steps:
                break
            point = torch.max(torch.min(point - step * grad.sign(), hi), lo)
        found.append(best if ok_any else point)
        hit.append(ok_any)
    return torch.cat(found), torch.tensor(hit)


def test_sign_descent_is_its_specification_image_by_image():
    # the last case takes an odd number of small steps that stay inside the ball (the
    # others end in its corners, where one step more or less changes nothing)
    for seed, eps, step, steps in ((0, 0.3, 0.05, 25), (1, 0.1, 0.02, 10), (2, 0.5, 0.1, 40),
                                   (3, 0.5, 0.01, 7)):
        x, start, logits_fn, loss_fn, success = _problem(seed=seed)
        got, got_hit = sign_descent(logits_fn, loss_fn, success, x, start, eps, step, steps,
                                    FLOOR)
        want, want_hit = _by_hand(logits_fn, loss_fn, success, x, start, eps, step, steps,
                                  FLOOR)
        assert torch.equal(got_hit, want_hit), seed
        assert torch.equal(got, want), seed
        # the cases mean something: some images succeed, some do not
        assert 0 < int(got_hit.sum()) < len(x) or seed != 0, got_hit


class Fixed(nn.Module):
    """A member that votes ``cls`` whatever the input (the search never succeeds)."""

    def __init__(self, cls: int):
        super().__init__()
        self.row = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(cls), 3).float() * 9)

    def forward(self, x):
        return self.row.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_each_search_starts_uniformly_in_the_ball_from_its_own_per_image_seed():
    specs = [parse_spec(s) for s in ("w2a4", "w2a4", "fp32")]
    ens = Ensemble([Fixed(0), Fixed(0), Fixed(0)], specs, "vote")
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    y, ids = torch.zeros(5, dtype=torch.long), torch.tensor([7, 11, 2, 40, 9])
    eps = 0.25
    attack = make_attack("vote-pgd", eps=eps, seed=4, steps=0, targets=1)
    out = attack(ens, x, y, ids=ids)
    # nothing succeeds, so the result is the last search's start: coalition 4 (the
    # reference with member 1 leaving), its first target
    u = per_image_uniform(x.shape, ids, 4, "vote-pgd", eps, "search", 4, 0)
    want = torch.max(torch.min(x + (2 * u - 1) * eps, (x + eps).clamp(max=1.0)),
                     (x - eps).clamp(min=0.0))
    assert torch.equal(out, want)
    assert (out - x).abs().max() > 0.5 * eps  # a real start, not the image


class Biased(nn.Module):
    """A linear member sure of class 0 (bias 50): no step within eps changes its vote.
    Pixel 3 has no weight (zero gradient)."""

    def __init__(self, seed: int):
        super().__init__()
        w = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed)) + 0.5
        w[3] = 0.0
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(torch.tensor([50.0, 0.0, 0.0]))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


def test_a_step_moves_each_pixel_by_rel_step_times_eps_and_a_flat_pixel_not_at_all():
    specs = [parse_spec(s) for s in ("w2a4", "w2a4", "fp32")]
    ens = Ensemble([Biased(s) for s in range(3)], specs, "vote")
    x = torch.full((3, 1, 2, 2), 0.5)
    attack = make_attack("vote-pgd", eps=0.3, rel_step=0.1, steps=1, random_start=False,
                         targets=1)
    moved = (attack(ens, x, torch.zeros(3, dtype=torch.long)) - x).flatten(1)
    assert torch.allclose(moved[:, :3].abs(), torch.full((3, 3), 0.03))
    assert torch.equal(moved[:, 3], torch.zeros(3))

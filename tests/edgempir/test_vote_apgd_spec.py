"""vote-apgd against its specification written out (edgempir/attacks/vote_apgd.py;
Croce & Hein 2020, Algorithm 1, as auto-attack's autopgd_base.py runs it): apgd_descent as an
independent per-image loop with Python scalars (step 2 eps, momentum, the checkpoints in
exact fractions, halving and the restart from the best point under either condition, the
second one only when the step was not halved at the last checkpoint, the momentum after a
restart from the iterate before; the lowest-loss successful iterate kept, the best iterate
where nothing succeeded). Written for the survivors of the mutation run of 2026-12-01
(docs/TESTING.md)."""
from __future__ import annotations

from fractions import Fraction
from math import ceil

import pytest
import torch
from linear_member import seeded_linear

from edgempir.attacks import make_attack
from edgempir.attacks._vote import Coalition, coalition_loss
from edgempir.attacks.vote_apgd import apgd_descent, checkpoints
from edgempir.ensemble import Ensemble
from edgempir.members import parse_spec

COALITION = Coalition((0, 1))


def _marks(steps: int) -> set[int]:
    """The paper's checkpoints, exactly: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return {ceil(q * steps) for q in p[1:] if q <= 1} - {0}


@pytest.mark.parametrize("steps", [10, 50, 100, 7, 1000])
def test_apgd_checkpoints_are_the_papers_in_exact_arithmetic(steps):
    """Croce & Hein 2020, section 3.2, computed with fractions: a float sum a hair above
    0.57 or 0.70 once moved a checkpoint by one step."""
    assert checkpoints(steps) == _marks(steps)


def _problem(n: int, seed: int, kappa: float):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 6, 4, generator=g) * 3  # three linear members, 6 pixels, 4 classes
    x = torch.rand(n, 1, 2, 3, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    t = (y + 1) % 4

    def logits_fn(xb):  # row by row: a batched product's rounding depends on the batch
        return torch.stack([torch.einsum("p,mpk->mk", row.flatten(), w) for row in xb], 1)

    def loss_fn(logits, rows):
        return coalition_loss(COALITION, logits, y[rows], t[rows], kappa, "sum")

    def success(logits, rows):  # a majority of the three members on a wrong class
        return (logits.argmax(dim=2) != y[rows]).sum(dim=0) >= 2
    return x, logits_fn, loss_fn, success


def _evaluate(logits_fn, loss_fn, success, point, row):
    p = point.detach().requires_grad_(True)
    logits = logits_fn(p)
    ok = bool(success(logits.detach(), row)[0])
    loss = loss_fn(logits, row)
    (grad,) = torch.autograd.grad(loss.sum(), p)
    return float(loss.detach()), grad, ok


def _one_image(problem, i, eps, steps, rho, floor, alpha, log):
    """APGD for image ``i`` alone; (result, success). ``log`` collects what happened at
    each checkpoint."""
    x, logits_fn, loss_fn, success = problem
    row, x0 = torch.tensor([i]), x[i:i + 1]
    lo, hi = (x0 - eps).clamp(min=0.0), (x0 + eps).clamp(max=1.0)

    def clip(v):
        return torch.max(torch.min(v, hi), lo)

    kept, kept_loss = None, float("inf")
    cur = x0.clone()
    loss, grad, ok = _evaluate(logits_fn, loss_fn, success, cur, row)
    if ok:
        kept, kept_loss = cur.clone(), loss
    settled = ok and loss <= floor + 1e-6
    best, best_loss, best_grad = cur.clone(), loss, grad
    eta, prev = 2 * eps, cur.clone()
    marks, last, lowered = _marks(steps), 0, 0
    eta_then, best_then = eta, best_loss
    for k in range(steps):
        if settled:  # the iterates after this one cannot lower a loss at its floor
            break
        z = clip(cur - eta * grad.sign())
        nxt = z if k == 0 else clip(cur + alpha * (z - cur) + (1 - alpha) * (cur - prev))
        prev, cur = cur, nxt
        new_loss, grad, ok = _evaluate(logits_fn, loss_fn, success, cur, row)
        if ok and new_loss < kept_loss:
            kept, kept_loss = cur.clone(), new_loss
        settled = settled or (ok and new_loss <= floor + 1e-6)
        lowered += new_loss < loss
        loss = new_loss
        if loss < best_loss:
            best, best_loss, best_grad = cur.clone(), loss, grad
        if k + 1 in marks:
            # condition 2: eta at the last checkpoint (before its decision) is eta now
            stalled = eta == eta_then and best_loss == best_then
            few = lowered < rho * (k + 1 - last)
            log.append((i, k + 1, "stalled" if stalled else "few" if few else "kept"))
            last, lowered, eta_then, best_then = k + 1, 0, eta, best_loss
            if few or stalled:  # x^(k+1) := x_max; prev stays x^(k) (momentum from there)
                eta /= 2
                cur, grad, loss = best.clone(), best_grad, best_loss
    return (kept, True) if kept is not None else (best, False)


CASES = [  # seed, eps, steps, rho, kappa: floors out of reach, in reach, a tiny ball
    (0, 0.3, 30, 0.75, 50.0),
    (1, 0.2, 20, 0.75, 1.0),
    (2, 0.5, 45, 0.3, 50.0),
    (3, 0.05, 12, 1.0, 2.0),
    (4, 0.25, 100, 0.75, 30.0),
    (6, 0.5, 4, 0.75, 50.0),  # 4 steps: a checkpoint after each, one image halves at 1
]


@pytest.mark.parametrize("alpha", [None, 0.5])  # None: the default, the paper's 0.75
def test_apgd_descent_is_its_specification_image_by_image(alpha):
    marks: list = []
    hits: list = []
    for seed, eps, steps, rho, kappa in CASES:
        problem = _problem(10, seed, kappa)
        floor = -2 * kappa
        x = problem[0]
        kw = {} if alpha is None else {"alpha": alpha}
        got, got_hit = apgd_descent(*problem[1:], x, eps, steps, rho, floor, **kw)
        log: list = []
        want = [_one_image(problem, i, eps, steps, rho, floor, alpha or 0.75, log)
                for i in range(len(x))]
        assert torch.equal(got_hit, torch.tensor([hit for _, hit in want])), seed
        assert torch.equal(got, torch.cat([point for point, _ in want])), seed
        hits += got_hit.tolist()
        assert (got - x).abs().max() <= eps + 1e-6 and got.min() >= 0 and got.max() <= 1
        marks += [(seed, *entry) for entry in log]
    # the cases mean something: at some checkpoints the step is halved for either reason,
    # at others it is kept; some images succeed and some do not
    kinds = [kind for *_, kind in marks]
    assert {kinds.count(kind) > 2 for kind in ("stalled", "few", "kept")} == {True}, kinds
    assert 2 < sum(hits) < len(hits) - 2, hits


def test_the_first_step_reaches_the_balls_corner_and_a_settled_batch_stops_there():
    """The first step (2 eps) lands in the ball's corner on every pixel with a gradient; a
    batch whose samples all succeed at the loss's floor stops there (the model is not
    called again: counted)."""
    calls = []
    w = torch.tensor([[2.0, -1.0], [-1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])

    def logits_fn(xb):
        calls.append(len(xb))
        return (xb.flatten(1) @ w).unsqueeze(0)

    def loss_fn(logits, rows):  # lowered by raising class 1 over class 0, floor -0.1
        return (logits[0, :, 0] - logits[0, :, 1]).clamp(min=-0.1)

    def success(logits, rows):
        return logits[0].argmax(dim=1) == 1

    x = torch.full((2, 1, 2, 2), 0.5)
    eps = 0.2
    found, hit = apgd_descent(logits_fn, loss_fn, success, x, eps, 50, 0.75, -0.1)
    step = (found - x).flatten(1)
    assert torch.allclose(step, torch.tensor([[-eps, eps, -eps, 0.0]] * 2))
    assert hit.all() and calls == [2, 2]


def test_a_batch_goes_on_after_success_until_the_loss_reaches_its_floor():
    """Succeeding is not enough to stop: the same case with the floor at -1, which the ball
    cannot reach (its best corner gives -0.2), runs every step."""
    calls = []
    w = torch.tensor([[2.0, -1.0], [-1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])

    def logits_fn(xb):
        calls.append(len(xb))
        return (xb.flatten(1) @ w).unsqueeze(0)

    def loss_fn(logits, rows):
        return (logits[0, :, 0] - logits[0, :, 1]).clamp(min=-1.0)

    def success(logits, rows):
        return logits[0].argmax(dim=1) == 1

    x = torch.full((2, 1, 2, 2), 0.5)
    found, hit = apgd_descent(logits_fn, loss_fn, success, x, 0.2, 5, 0.75, -1.0)
    assert hit.all() and calls == [2] * 6
    # the ball's best corner, found at the first step, is kept (no later iterate is lower)
    assert torch.allclose((found - x).flatten(1), torch.tensor([[-0.2, 0.2, -0.2, 0.0]] * 2))


def test_the_attack_passes_its_parameters_to_the_search(monkeypatch):
    """VoteAPGD hands apgd_descent its own eps, steps and rho (not the defaults)."""
    seen = []
    import edgempir.attacks.vote_apgd as module
    real = module.apgd_descent

    def spy(logits_fn, loss_fn, success, x, eps, steps, rho, floor, **kw):
        seen.append((eps, steps, rho, floor))
        return real(logits_fn, loss_fn, success, x, eps, steps, rho, floor, **kw)

    monkeypatch.setattr(module, "apgd_descent", spy)
    specs = [parse_spec(s) for s in ("w2a4", "w4a4", "fp32")]
    ens = Ensemble([seeded_linear(6, 4, s, scale=3) for s in range(3)], specs, "vote")
    x = torch.rand(4, 1, 2, 3, generator=torch.Generator().manual_seed(9))
    y = ens(x).argmax(dim=1)
    make_attack("vote-apgd", eps=0.07, steps=13, rho=0.4, kappa=3.0, targets=1)(ens, x, y)
    assert seen and {s[:3] for s in seen} == {(0.07, 13, 0.4)}
    # kappa times the coalition's size: every coalition of 3 members is a majority of 2
    assert {s[3] for s in seen} == {-6.0}

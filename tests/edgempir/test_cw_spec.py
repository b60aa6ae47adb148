"""CW-L2 against its specification written out image by image (edgempir/attacks/cw.py's
docstring: tanh space, the margin loss with a constant, Adam, the smallest-L2 misclassified
iterate, the batch-wide early abort every steps // 10 iterations, the last iterate scored
only without it, an optional L2 bound). Written for the survivors of the mutation run of
2026-12-01 (docs/TESTING.md)."""
from __future__ import annotations

import math

import pytest
import torch
from linear_member import seeded_linear

from edgempir.attacks import make_attack


def _by_hand(model, x, y, steps, lr, c, confidence, abort_early, eps, decide):
    """The examples, and how many times the model saw the batch."""
    calls = 0
    w = torch.atanh((2 * x - 1) * (1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best = [x[i].clone() for i in range(len(x))]
    best_l2 = [math.inf] * len(x)
    limit = math.inf if eps is None else eps * eps
    check_every = max(steps // 10, 1)
    prev = 1e6

    def score(x_adv, z, l2s):
        preds = z.argmax(dim=1) if decide is None else decide(x_adv)
        for i in range(len(x)):
            if int(preds[i]) != int(y[i]) and l2s[i] < best_l2[i] and l2s[i] <= limit:
                best[i], best_l2[i] = x_adv[i].detach().clone(), l2s[i]

    for it in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        z = model(x_adv)
        calls += 1
        terms, l2s = [], []
        for i in range(len(x)):
            zi, yi = z[i], int(y[i])
            other = max(zi[j] for j in range(zi.shape[0]) if j != yi)
            l2 = ((x_adv[i] - x[i]) ** 2).sum()
            terms.append(l2 + c * torch.clamp(zi[yi] - other + confidence, min=0))
            l2s.append(float(l2.detach()))
        loss = torch.stack(terms).sum()
        if abort_early and it % check_every == 0:
            if loss.item() > prev * 0.9999:
                return torch.stack(best), calls
            prev = loss.item()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            score(x_adv.detach(), z.detach(), l2s)
        opt.step()
    if not abort_early:
        with torch.no_grad():
            x_adv = (torch.tanh(w) + 1) / 2
            l2s = [float(((x_adv[i] - x[i]) ** 2).sum()) for i in range(len(x))]
            z = None
            if decide is None:  # the last iterate, judged by the model: one more call
                z, calls = model(x_adv), calls + 1
            score(x_adv, z, l2s)
    return torch.stack(best), calls


class _Counted(torch.nn.Module):
    """The network, counting the calls that see the whole batch (not the class-count probe);
    ``reverse`` reverses the class order, so that the labels are high and a wrong answer
    lies below its label."""

    def __init__(self, net, rows: int, reverse: bool):
        super().__init__()
        self.net, self.rows, self.reverse, self.calls = net, rows, reverse, 0

    def forward(self, xb):
        self.calls += len(xb) == self.rows
        z = self.net(xb)
        return z.flip(1) if self.reverse else z


def _case(reverse: bool = False):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(10, 1, 2, 2, generator=g)
    x[0] = 0.0
    x[1] = 1.0  # the ends of the range (the 1e-6 margin in tanh space)
    model = _Counted(seeded_linear(4, 3, seed=0, scale=2), len(x), reverse)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    model.calls = 0
    return model, x, y


def _attack_and_spec(model, x, y, abort_early, eps, confidence, c, steps, lr, decide):
    attack = make_attack("cw", eps=eps, steps=steps, lr=lr, initial_const=c,
                         confidence=confidence, abort_early=abort_early)
    got = attack(model, x, y, decide=decide)
    got_calls, model.calls = model.calls, 0
    want, want_calls = _by_hand(model, x, y, steps, lr, c, confidence, abort_early, eps, decide)
    return got, want, got_calls, want_calls


# the abort cases' learning rates make the loss stall, so that the abort fires (at the 9th
# of 19 and the 13th of 30 iterations), at checks every 1, 2 and 3 iterations; the model's
# calls on the batch are counted, so an abort one check early or late fails
@pytest.mark.parametrize("abort_early, eps, confidence, c, steps, lr, own_decide, reverse", [
    (False, None, 0.0, 10.0, 12, 0.1, False, False),
    (False, 0.6, 0.5, 2.0, 15, 0.1, True, False),
    (True, None, 0.0, 10.0, 19, 0.5, False, False),
    (True, 0.8, 1.0, 0.5, 30, 1.0, True, False),
    (True, None, 0.0, 10.0, 30, 0.5, False, False),
    (True, None, 0.0, 10.0, 29, 1.0, False, False),
    (True, None, 0.0, 10.0, 9, 1.0, False, False),   # fewer than 10 steps: a check every step
    (True, None, 0.0, 0.5, 9, 1.0, False, False),    # ... where every 2 would keep another
    (False, None, 0.0, 50.0, 1, 1.0, False, False),  # one step: only the last iterate can win
    # the last iterate beats an earlier success by its smaller L2
    (False, None, 0.0, 10.0, 12, 1.0, False, False),
    (False, None, 0.0, 0.5, 12, 1.0, False, True),   # wrong answers below the label
])
def test_cw_is_its_specification(abort_early, eps, confidence, c, steps, lr, own_decide,
                                 reverse):
    model, x, y = _case(reverse)
    net = model.net
    # a decision that is not the model's own: class 0 is never accepted as a wrong answer
    decide = (lambda xb: torch.where(net(xb).argmax(1) == 0, y[:len(xb)], net(xb).argmax(1))
              ) if own_decide else None
    got, want, got_calls, want_calls = _attack_and_spec(
        model, x, y, abort_early, eps, confidence, c, steps, lr, decide)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert got_calls == want_calls
    changed = (got - x).flatten(1).abs().amax(dim=1) > 0
    assert 0 < int(changed.sum()), "the attack never succeeded: the case tests nothing"
    if eps is not None:
        assert ((got - x).flatten(1).norm(dim=1) <= eps + 1e-6).all()


def test_cw_goes_on_while_the_loss_falls_by_more_than_a_ten_thousandth():
    """A small learning rate: the batch's loss falls slowly but by more than 0.01% between
    checks, so the early abort never fires and every step runs (a threshold of
    ``prev ** 0.9999`` aborted at the second check)."""
    model, x, y = _case()
    got, want, got_calls, want_calls = _attack_and_spec(
        model, x, y, True, None, 0.0, 10.0, 10, 0.001, None)
    assert want_calls == 10 and got_calls == want_calls
    assert torch.allclose(got, want, atol=1e-6, rtol=0)

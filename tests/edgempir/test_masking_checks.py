"""The four masking checks of docs/EVAL.md, each seen firing and not firing on cases built
for it, on a real Evaluator around an ensemble of the tiny undefended model.

- a healthy model: gradients everywhere, PGD at a large eps brings it to 0%;
- a *masked* model: the same decisions, but its input gradient is exactly zero (what a
  quantizer without a straight-through estimator does), so white-box attacks stall;
- ``more-steps-lower``: PGD-5 at eps 0.1 is far from converged on the tiny model (measured:
  continuing 5 more steps breaks 5 of 32 more images), PGD-10 at eps 0.15 has converged (0%).
- ``square-beats-white-box`` is arithmetic on the first figures: built by hand, margin edge
  included.

Disabling any check (``passed`` always True) fails the "fires" test of that check, and
every check in the registry (``edgempir.eval.CHECKS``) must have a firing and a quiet case
in ``CASES`` below: a new check without them fails
``test_every_registered_check_fires_and_stays_quiet``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgempir.attacks import make_attack
from edgempir.eval import (
    CHECKS,
    LARGE_EPS_MAX_ACCURACY,
    MORE_STEPS_MARGIN,
    SQUARE_MARGIN,
    ZERO_GRAD_MAX_FRACTION,
    Evaluator,
    Planned,
    get_config,
    masking_checks,
)

SETTINGS = {"n": 32, "large_eps": 0.5, "large_eps_steps": 10, "more_steps_factor": 2}
LIMITS = {"zero-gradients": ZERO_GRAD_MAX_FRACTION, "large-eps-not-zero": LARGE_EPS_MAX_ACCURACY}


class Masked(nn.Module):
    """The inner model's logits with an input gradient of exactly zero."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).detach() + 0 * x.sum(dim=(1, 2, 3))[:, None]


def _evaluator(member, x, y, tmp_path, pgd_steps=10):
    from edgempir.ensemble import Ensemble
    from edgempir.members import MemberSpec

    ens = Ensemble([member] * 3, [MemberSpec(None, None)] * 3)
    plan = (Planned("pgd", "pgd", {"steps": pgd_steps, "rel_step": 0.25, "step_size": None,
                                   "random_start": True, "restarts": 1}),
            Planned("square", "square", {"n_queries": 10}, cascade=True))
    return Evaluator(ens, x, y, np.arange(len(y)), get_config("adaptive", "quick"), plan,
                     seed=0, batch_size=64, partial_dir=tmp_path, run_fingerprint="test",
                     progress=False)


def _run(ev, eps, pgd_x_adv, pgd_ok, first=None):
    ev.last_sets = {"pgd@surrogate": {"ok": pgd_ok[None], "x_adv": pgd_x_adv,
                                      "source": "surrogate"}}
    first = first or {"attacks": {"pgd": {"ensemble": float(pgd_ok.mean())},
                                  "square": {"ensemble": float(pgd_ok.mean())}}}
    checks = masking_checks(ev, eps, first, SETTINGS)
    for c in checks:  # the verdict agrees with the printed value and the documented limit
        if c["id"] in LIMITS:
            assert c["passed"] == (c["value"] <= LIMITS[c["id"]]), c
    return {c["id"]: c for c in checks}


def _pgd(model, x, y, eps, steps):
    x_adv = make_attack("pgd", eps=eps, steps=steps)(model, x, y)
    with torch.no_grad():
        return x_adv.numpy(), (model(x_adv).argmax(1) == y).numpy()


def test_a_healthy_converged_evaluation_passes_every_check(tiny_model, tiny_batch, tmp_path):
    x, y = tiny_batch
    ev = _evaluator(tiny_model, x, y, tmp_path)
    checks = _run(ev, 0.15, *_pgd(tiny_model, x, y, 0.15, 10))
    assert {k: c["passed"] for k, c in checks.items()} == dict.fromkeys(checks, True)
    assert checks["zero-gradients"]["value"] == 0.0
    assert checks["large-eps-not-zero"]["value"] == 0.0


def test_zero_gradients_and_large_eps_fire_on_a_masked_model(tiny_model, tiny_batch, tmp_path):
    x, y = tiny_batch
    ev = _evaluator(Masked(tiny_model), x, y, tmp_path)
    checks = _run(ev, 0.1, x.numpy(), np.ones(len(y), bool))
    assert checks["zero-gradients"]["passed"] is False
    assert checks["zero-gradients"]["value"] == 1.0          # every input
    assert checks["large-eps-not-zero"]["passed"] is False
    assert checks["large-eps-not-zero"]["value"] > 0.5       # PGD at eps 0.5 stalled
    assert "all-zero input gradient" in checks["zero-gradients"]["detail"]


def test_more_steps_fires_when_pgd_stopped_too_early(tiny_model, tiny_batch, tmp_path):
    x, y = tiny_batch
    ev = _evaluator(tiny_model, x, y, tmp_path, pgd_steps=5)
    check = _run(ev, 0.1, *_pgd(tiny_model, x, y, 0.1, 5))["more-steps-lower"]
    margin = max(MORE_STEPS_MARGIN, 1.5 / len(y))
    assert check["passed"] is False and check["value"] > margin, check
    assert "5 more steps" in check["detail"]


def test_more_steps_passes_when_further_steps_change_nothing(tiny_model, tiny_batch, tmp_path):
    """The masked model: continuing PGD cannot break anything (no gradient), so the
    check passes while the two gradient checks fire: each check judges one thing."""
    x, y = tiny_batch
    ev = _evaluator(Masked(tiny_model), x, y, tmp_path, pgd_steps=5)
    check = _run(ev, 0.1, x.numpy(), np.ones(len(y), bool))["more-steps-lower"]
    assert check["passed"] is True and check["value"] == 0.0


@pytest.mark.parametrize("white, square, passed", [
    (0.80, 0.50, False),                      # Square far below the white-box attacks
    (0.80, 0.80, True),                       # Square found nothing more
    (0.80, 0.85, True),                       # Square weaker (cascade: cannot happen, harmless)
    (0.6135, 0.6115, True),                   # exactly the margin (0.002) in float arithmetic
    (0.6135, 0.6105, False),                  # just above it
])
def test_square_beats_white_box_fires_on_a_gap(white, square, passed, tiny_model, tiny_batch,
                                               tmp_path):
    x, y = tiny_batch
    # many samples: the margin is SQUARE_MARGIN, not 1.5 / n
    big = torch.cat([x] * 25)[:800]
    ev = _evaluator(tiny_model, big, torch.cat([y] * 25)[:800], tmp_path)
    assert max(SQUARE_MARGIN, 1.5 / len(ev.y)) == SQUARE_MARGIN
    first = {"attacks": {"pgd": {"ensemble": white}, "apgd-ce": {"ensemble": white + 0.01},
                         "square": {"ensemble": square}}}
    x_adv, ok = _pgd(tiny_model, ev.x[:32], ev.y[:32], 0.15, 10)
    ev.last_sets = {"pgd@surrogate": {"ok": np.concatenate([ok] * 25)[None], "source": "s",
                                      "x_adv": np.concatenate([x_adv] * 25)}}
    check = next(c for c in masking_checks(ev, 0.15, first, SETTINGS)
                 if c["id"] == "square-beats-white-box")
    assert check["passed"] is passed, check
    assert check["value"] == pytest.approx(white - square)


def test_square_check_is_not_run_without_square(tiny_model, tiny_batch, tmp_path):
    x, y = tiny_batch
    ev = _evaluator(tiny_model, x, y, tmp_path)
    checks = _run(ev, 0.15, *_pgd(tiny_model, x, y, 0.15, 10),
                  first={"attacks": {"pgd": {"ensemble": 0.0}}})
    assert checks["square-beats-white-box"]["passed"] is None


# ----------------------------------------------------------------- the registry
#: scenarios on the tiny model: model masked or not, PGD steps and eps of the configured
#: PGD (its examples are the more-steps check's start), and the first eps's figures of the
#: white-box attacks and Square (None: both the PGD's own accuracy)
SCENARIOS = {
    "healthy": {"masked": False, "steps": 10, "eps": 0.15, "figures": None},
    "masked": {"masked": True, "steps": 10, "eps": 0.1, "figures": None},
    "stopped-early": {"masked": False, "steps": 5, "eps": 0.1, "figures": None},
    "square-far-below": {"masked": False, "steps": 10, "eps": 0.15, "figures": (0.8, 0.5)},
}
#: per registered check: (the scenario where it fires, the one where it stays quiet)
CASES = {
    "zero-gradients": ("masked", "healthy"),
    "square-beats-white-box": ("square-far-below", "healthy"),
    "large-eps-not-zero": ("masked", "healthy"),
    "more-steps-lower": ("stopped-early", "healthy"),
}


def _scenario(name, tiny_model, x, y, tmp_path):
    s = SCENARIOS[name]
    model = Masked(tiny_model) if s["masked"] else tiny_model
    ev = _evaluator(model, x, y, tmp_path, pgd_steps=s["steps"])
    if s["masked"]:  # PGD cannot move: its examples are the clean inputs, all still right
        x_adv, ok = x.numpy(), np.ones(len(y), bool)
    else:
        x_adv, ok = _pgd(tiny_model, x, y, s["eps"], s["steps"])
    ev.last_sets = {"pgd@surrogate": {"ok": ok[None], "x_adv": x_adv, "source": "surrogate"}}
    white, square = s["figures"] or (float(ok.mean()), float(ok.mean()))
    first = {"attacks": {"pgd": {"ensemble": white}, "square": {"ensemble": square}}}
    return ev, s["eps"], first


@pytest.mark.parametrize("check_id", list(CHECKS))
def test_every_registered_check_fires_and_stays_quiet(check_id, tiny_model, tiny_batch,
                                                      tmp_path):
    assert check_id in CASES, f"check {check_id!r} is registered but has no firing and " \
                              "quiet case in CASES"
    check = CHECKS[check_id]
    assert f"docs/EVAL.md#{check_id}" in check.__doc__, "the docstring names its docs anchor"
    for scenario, expected in zip(CASES[check_id], (False, True)):
        ev, eps, first = _scenario(scenario, tiny_model, *tiny_batch, tmp_path / scenario)
        record = check(ev, eps, first, SETTINGS)
        assert record["id"] == check_id and record["doc"] == f"docs/EVAL.md#{check_id}"
        assert record["passed"] is expected, (scenario, record)


def test_square_check_is_not_run_without_a_white_box_attack():
    """``--attacks square``: nothing to compare Square with, the check says so (skip)."""
    from types import SimpleNamespace

    ev = SimpleNamespace(plan=(Planned("square", "square", cascade=True),), y=np.zeros(100))
    record = CHECKS["square-beats-white-box"](
        ev, 0.1, {"attacks": {"square": {"ensemble": 0.5}}}, SETTINGS)
    assert record["passed"] is None and "no white-box attack" in record["detail"]

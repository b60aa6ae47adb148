"""The attack parameters of the adaptive configurations, as the attacks really receive them:
our settings -> our wrappers -> torchattacks' objects (the ones that run).

docs/EVAL.md promises: APGD-T and FAB-T with 9 target classes on 10 classes (all but the
true one), Square with p_init 0.8 and 5000 queries (standard) / 300 (quick), the masking
checks on 200 / 32 images with PGD at eps 0.5 for 50 / 10 steps.
"""
from __future__ import annotations

import pytest
import torch

from edgempir.attacks import make_attack
from edgempir.robustness import get_config

EPS = 0.1
CLASSES = 10


def _built(config: str) -> dict:
    """name -> the torchattacks object (or our attack) that eval builds for the ensemble."""
    import torchattacks

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, CLASSES))
    out = {}
    for p in get_config("adaptive", config).plan:
        attack = make_attack(p.attack, eps=EPS, seed=3, **p.params_for("surrogate"))
        if hasattr(attack, "ta_kwargs"):
            out[p.name] = (attack, getattr(torchattacks, attack.ta_class)(
                model, **attack.ta_kwargs(CLASSES)))
        else:
            out[p.name] = (attack, None)
    return out


@pytest.mark.parametrize("config, steps, queries", [("standard", 100, 5000),
                                                    ("quick", 50, 300)])
def test_autoattack_components_get_the_documented_parameters(config, steps, queries):
    built = _built(config)
    for name in ("apgd-ce", "apgd-t", "fab-t", "square"):
        if name not in built:
            assert config == "quick" and name in ("apgd-t", "fab-t")
            continue
        _ours, ta = built[name]
        assert ta.eps == pytest.approx(EPS) and ta.norm == "Linf" and ta.seed == 3, name
        if name == "square":
            assert ta.n_queries == queries and ta.p_init == 0.8 and ta.loss == "margin"
            assert ta.n_restarts == 1
        else:
            assert ta.steps == steps and ta.n_restarts == 1, name
    ce = built["apgd-ce"][1]
    assert ce.loss == "ce" and ce.thr_decr == 0.75
    if config == "standard":
        apgd_t, fab_t = built["apgd-t"][1], built["fab-t"][1]
        assert apgd_t.n_target_classes == CLASSES - 1 and apgd_t.thr_decr == 0.75
        assert fab_t.n_target_classes == CLASSES - 1 and fab_t.multi_targeted
    pgd = built["pgd"][0]
    assert pgd.steps == steps and pgd.step() == pytest.approx(0.25 * EPS)
    assert pgd.random_start and pgd.restarts == (5 if config == "standard" else 1)


@pytest.mark.parametrize("target_classes, expected",
                         [(None, 9), (1, 1), (2, 2), (9, 9), (20, 9)])
def test_target_class_count_is_capped_by_the_classes(target_classes, expected):
    import torchattacks

    model = torch.nn.Linear(4, CLASSES)
    for name in ("apgd-t", "fab-t"):
        attack = make_attack(name, eps=EPS, target_classes=target_classes)
        ta = getattr(torchattacks, attack.ta_class)(model, **attack.ta_kwargs(CLASSES))
        assert ta.n_target_classes == expected, name


def test_masking_check_settings():
    standard = get_config("adaptive", "standard").checks
    quick = get_config("adaptive", "quick").checks
    assert standard == {"n": 200, "large_eps": 0.5, "large_eps_steps": 50,
                        "more_steps_factor": 2}
    assert quick == {"n": 32, "large_eps": 0.5, "large_eps_steps": 10, "more_steps_factor": 2}
    assert get_config("paper", "standard").checks is None
    member = next(p for p in get_config("adaptive", "quick").plan if p.name == "pgd")
    assert member.params_for("m0")["steps"] == 40 and member.params_for("surrogate")["steps"] == 50


def test_overrides_reach_the_runs_aimed_at_members_alone():
    """quick attacks each member alone with PGD-40; an API override of PGD's steps must
    change those runs too, not only the one aimed at the ensemble."""
    from edgempir.eval.run import _overridden

    pgd = next(p for p in get_config("adaptive", "quick").plan if p.name == "pgd")
    assert pgd.params_for("m0")["steps"] == 40 and pgd.params_for("surrogate")["steps"] == 50
    short = _overridden(pgd, {"pgd": {"steps": 3}, "square": {"n_queries": 5}})
    assert short.params_for("m0")["steps"] == short.params_for("surrogate")["steps"] == 3
    assert short.params_for("m0")["restarts"] == pgd.params_for("m0")["restarts"]
    assert _overridden(pgd, {"square": {"n_queries": 5}}) is pgd


def test_zero_target_classes_is_refused_not_read_as_all():
    from edgempir.attacks import AttackError

    for name in ("apgd-t", "fab-t"):
        with pytest.raises(AttackError, match="target_classes 0 attacks no class"):
            make_attack(name, eps=EPS, target_classes=0).ta_n_classes(CLASSES)


def test_a_missing_torchattacks_is_a_one_line_error_that_says_how_to_install_it(monkeypatch):
    import sys

    from edgempir.attacks import AttackError

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import raises ImportError
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, CLASSES))
    with pytest.raises(AttackError, match="pip install --no-deps torchattacks=="):
        make_attack("square", eps=EPS)(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))

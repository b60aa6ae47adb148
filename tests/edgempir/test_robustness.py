"""Robustness evaluation: per-sample worst case, the vote for scoring, resume, checks."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgempir.attacks import AttackError
from edgempir.robustness import (
    CONFIGS,
    LARGE_EPS_MAX_ACCURACY,
    MORE_STEPS_MARGIN,
    SQUARE_MARGIN,
    ZERO_GRAD_MAX_FRACTION,
    WorstCase,
    choose_subset,
    evaluate,
    get_config,
    parse_eps_list,
    select_attacks,
)

EVAL_DOC = Path(__file__).resolve().parents[2] / "docs" / "EVAL.md"


# ---------------------------------------------------------------- pure parts
def test_worst_case_is_per_sample_not_per_attack():
    clean = np.array([[1, 1, 1, 1]], dtype=bool)
    wc = WorstCase(clean, pool="all")
    a = wc.add(np.array([[0, 0, 1, 1]], dtype=bool), [0], cascade=False)
    b = wc.add(np.array([[1, 1, 0, 0]], dtype=bool), [0], cascade=False)
    # each attack alone leaves 50%; per sample, every image was broken by one of them
    assert a[0] == 0.5 and b[0] == 0.5
    assert wc.accuracy()[0] == 0.0


def test_worst_case_pools_and_cascade():
    clean = np.ones((2, 4), dtype=bool)            # ensemble, one member
    ok = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=bool)
    aimed = WorstCase(clean, pool="aimed")
    aimed.add(ok, [1], cascade=False)              # aimed at the member only
    acc = aimed.accuracy()
    assert np.isnan(acc[0]) and acc[1] == 0.75     # no worst case for an unattacked model
    every = WorstCase(clean, pool="all")
    every.add(ok, [1], cascade=False)              # any example in the ball counts
    assert every.accuracy().tolist() == [0.75, 0.75]
    # a cascade figure is the robust accuracy after the attack (cumulative)
    later = every.add(np.array([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=bool), [0], cascade=True)
    assert later[0] == 0.5 and every.accuracy()[0] == 0.5
    # an L2 (unbounded) set never enters the L-inf worst case
    every.add(np.zeros((2, 4), dtype=bool), [0, 1], cascade=False, bounded=False)
    assert every.accuracy()[0] == 0.5


def test_worst_case_runs_a_cascade_only_on_what_is_still_robust():
    """WorstCase.run, as torchattacks' MultiAttack: a cascade attack sees only the samples
    that every earlier set left robust for its targets; its figure is cumulative, and the
    kept example of a sample is the first that fools the ensemble."""
    from types import SimpleNamespace

    from edgempir.eval import Planned

    y = np.array([0, 1, 2, 3])
    targets = ["ensemble", "m0"]
    jobs = [SimpleNamespace(planned=Planned("pgd", "pgd"), source="surrogate",
                            aims=["ensemble", "m0"], key="pgd@surrogate"),
            SimpleNamespace(planned=Planned("square", "square", cascade=True),
                            source="surrogate", aims=["ensemble"], key="square@surrogate")]
    # pgd breaks sample 0 for both targets; square breaks sample 1 for the ensemble
    preds = {"pgd": np.array([[9, 1, 2, 3], [9, 1, 2, 3]]),
             "square": np.array([[9, 9, 2, 3], [0, 1, 2, 3]])}
    masks = {}

    def attack(job, mask):
        import torch

        masks[job.planned.name] = mask.copy()
        x_adv = torch.full((4, 1), float(len(masks)))
        return x_adv, preds[job.planned.name], np.zeros(4), np.zeros(4)

    wc = WorstCase(np.ones((2, 4), dtype=bool), "all", targets=targets, y=y,
                   examples_from=np.zeros((4, 1), np.float32), keep_x_adv=["pgd@surrogate"])
    wc.run(jobs, attack)
    assert masks["pgd"].all()
    assert masks["square"].tolist() == [False, True, True, True]   # sample 0 already broken
    assert wc.figures["square"] == {"_n_attacked": {"ensemble": 3}, "ensemble": 0.5}
    assert wc.figures["pgd"]["m0"] == 0.75
    assert wc.accuracy().tolist() == [0.5, 0.75]                  # square aimed at the ensemble
    assert set(wc.sets) == {"pgd@surrogate", "square@surrogate"}
    assert "x_adv" in wc.sets["pgd@surrogate"] and "x_adv" not in wc.sets["square@surrogate"]
    assert wc.examples()[:, 0].tolist() == [1.0, 2.0, 1.0, 1.0]


def test_subset_is_fixed_by_the_seed():
    a, b, c = choose_subset(10000, 100, 0), choose_subset(10000, 100, 0), choose_subset(10000, 100, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(choose_subset(50, 100, 0), np.arange(50))


def test_eps_parsing_and_defaults():
    assert parse_eps_list(None, "fashion-mnist") == [0.1]
    assert parse_eps_list(None, "mnist") == [0.3]
    assert parse_eps_list(None, "cifar10") == [8 / 255]
    assert parse_eps_list("0.05, 0.1,0.2", "mnist") == [0.05, 0.1, 0.2]
    assert parse_eps_list("8/255", "mnist") == [8 / 255]
    # protocol paper: the reference's eps per data set
    assert parse_eps_list(None, "mnist", "paper") == [0.3]
    assert parse_eps_list(None, "fashion-mnist", "paper") == [0.3]
    assert parse_eps_list(None, "cifar10", "paper") == [0.1]
    assert parse_eps_list("0.2", "cifar10", "paper") == [0.2]
    for bad in ("0", "-0.1", "1.5", "x", "1/0"):
        with pytest.raises(AttackError, match="eps"):
            parse_eps_list(bad, "mnist")


def test_configurations_follow_the_issue():
    paper = get_config("paper", "standard")
    assert [p.name for p in paper.plan] == ["fgsm", "bim", "pgd", "cw"]
    by = {p.name: p for p in paper.plan}
    assert by["bim"].params == {"steps": 40, "step_size": 0.01}
    assert by["pgd"].params["steps"] == 40 and by["pgd"].params["step_size"] == 0.01
    assert by["cw"].params == {"steps": 50, "lr": 0.1, "initial_const": 10.0,
                               "abort_early": True}
    assert by["bim"].ensemble_source == by["cw"].ensemble_source == "reference"
    assert by["fgsm"].ensemble_source == by["pgd"].ensemble_source == "agreeing"
    assert by["pgd"].attack == "pgd-ref"  # unclipped random start (tests/.../paper_protocol)
    assert all(p.labels == "predicted" for p in paper.plan)
    assert paper.n is None and "whole test set" in paper.label
    adaptive = get_config("adaptive", "standard")
    names = [p.name for p in adaptive.plan]
    assert names == ["pgd", "vote-pgd", "vote-apgd", "apgd-ce", "apgd-t", "fab-t", "square"]
    by = {p.name: p for p in adaptive.plan}
    assert by["vote-pgd"].ensemble_source == by["vote-apgd"].ensemble_source == "vote"
    assert by["vote-pgd"].cascade and by["vote-apgd"].params["steps"] == 100
    pgd = adaptive.plan[0]
    assert pgd.params["steps"] == 100 and pgd.params["restarts"] > 1
    assert adaptive.plan[-1].params["n_queries"] == 5000
    quick = get_config("adaptive", "quick")
    assert "lighter than standard" in quick.label and quick.n < adaptive.n
    assert [p.name for p in quick.plan] == ["pgd", "vote-pgd", "apgd-ce", "square"]
    assert quick.plan[1].params["steps"] == 50 and quick.plan[1].params["targets"] == 2
    for (protocol, name), cfg in CONFIGS.items():
        assert cfg.protocol == protocol and cfg.name == name


def test_attack_selection_errors():
    cfgs = [get_config("paper", "quick"), get_config("adaptive", "quick")]
    with pytest.raises(AttackError, match="unknown attack 'deepfool'"):
        select_attacks(cfgs, ["deepfool"])
    with pytest.raises(AttackError, match="none of the attacks cw is part of protocol adaptive"):
        select_attacks(cfgs, ["cw"])
    plans = select_attacks(cfgs, ["pgd"])
    assert [[p.name for p in plan] for plan in plans] == [["pgd"], ["pgd"]]
    with pytest.raises(AttackError, match="unknown protocol"):
        get_config("strong", "quick")


# ---------------------------------------------------------------- end to end (tiny)
def _report(run, protocol):
    return json.loads((run / "eval" / f"{protocol}-quick.json").read_text())


def test_report_schema_and_contract(evaluated_run):
    run, result = evaluated_run
    for protocol in ("paper", "adaptive"):
        rep = _report(run, protocol)
        assert rep == json.loads(json.dumps(result.reports[protocol]))
        assert rep["schema"] == "edgempir.eval" and rep["schema_version"] == 1
        assert rep["protocol"] == protocol and rep["config"] == "quick"
        assert "overrides" in rep["config_label"]
        assert rep["norm"] == "Linf" and rep["eps"] == [0.1, 0.3]
        assert rep["n_examples"] == 40 and len(rep["subset"]["indices"]) == 40
        assert rep["subset"]["indices"] == choose_subset(500, 40, 0).tolist()
        assert rep["combiner"] == "vote"
        assert [m["spec"] for m in rep["members"]] == ["w2a4", "w4a4", "fp32"]
        assert rep["members"][2]["weight_bits"] == 32 and rep["members"][0]["act_bits"] == 4
        assert {"torch", "brevitas", "torchattacks"} <= set(rep["versions"])
        for res in rep["results"]:
            for fig in [res["clean"], res["worst_case"], *res["attacks"].values()]:
                vals = [fig["ensemble"], *fig["members"]]
                assert all(v is None or 0 <= v <= 1 for v in vals)
                assert len(fig["members"]) == 3
            for i in range(4):
                wc = [res["worst_case"]["ensemble"], *res["worst_case"]["members"]][i]
                cl = [res["clean"]["ensemble"], *res["clean"]["members"]][i]
                assert wc is None or wc <= cl
    paper = _report(run, "paper")
    assert set(paper["results"][0]["attacks"]) == {"fgsm", "bim", "pgd", "cw"}
    # quick attacks only the fp32 member alone (the paper's "fp32 alone" row)
    wc = paper["results"][0]["worst_case"]
    assert wc["members"][:2] == [None, None] and wc["members"][2] is not None
    assert paper["results"][0]["attacks"]["cw"]["norm"] == "L2"
    assert "mean_of_attacks" in paper["results"][0]
    adaptive = _report(run, "adaptive")
    atk = adaptive["results"][0]["attacks"]
    assert {"pgd", "vote-pgd", "apgd-ce", "square", "transfer-m0", "transfer-m1",
            "transfer-m2"} <= set(atk)
    assert atk["square"]["mode"] == "cascade" and atk["vote-pgd"]["mode"] == "cascade"
    assert "coalitions of members that decide the vote" in atk["vote-pgd"]["gradients"]
    # the aimed attack ran on what PGD left robust, and can only lower the figure
    assert atk["vote-pgd"]["n_attacked"]["ensemble"] <= 40
    assert atk["vote-pgd"]["ensemble"] <= atk["pgd"]["ensemble"]
    # larger eps, lower (or equal) worst case
    r = adaptive["results"]
    assert r[1]["worst_case"]["ensemble"] <= r[0]["worst_case"]["ensemble"]


def test_adaptive_worst_case_is_per_sample_and_scored_with_the_vote(evaluated_run,
                                                                     vote_accuracy):
    """The saved examples reproduce the worst case when scored with an independent vote."""
    from edgempir.calib import read_set

    run, _ = evaluated_run
    rep = _report(run, "adaptive")
    res = rep["results"][0]
    adv = read_set(run / "eval" / "adv-adaptive.npz", input_shape=(1, 28, 28))
    assert np.array_equal(adv["index"], rep["subset"]["indices"])
    assert float(adv["eps"]) == pytest.approx(0.1)
    x, y = adv["input"], adv["label"]
    # every example inside the ball around its clean image, inside [0, 1]
    from edgempir.data import load_dataset, to_float

    clean = to_float(load_dataset("synthetic").x_test[adv["index"]])
    assert np.abs(x - clean).max() <= 0.1 + 1e-6 and x.min() >= 0 and x.max() <= 1
    # scored with the numpy vote, the chosen examples give exactly the worst case
    assert vote_accuracy(run, x, y) == pytest.approx(res["worst_case"]["ensemble"])
    # per sample: at most the best single attack, and the clean figure is the vote's
    singles = [a["ensemble"] for a in res["attacks"].values() if a["ensemble"] is not None]
    assert res["worst_case"]["ensemble"] <= min(singles)
    assert res["clean"]["ensemble"] == pytest.approx(vote_accuracy(run, clean, y))


def test_masking_checks_are_documented(evaluated_run):
    run, _ = evaluated_run
    checks = _report(run, "adaptive")["masking_checks"]
    ids = [c["id"] for c in checks]
    assert ids == ["zero-gradients", "square-beats-white-box", "large-eps-not-zero",
                   "more-steps-lower"]
    doc = EVAL_DOC.read_text()
    anchors = {m.lower() for m in re.findall(r"^#+ .*?`?([a-z-]+)`?\s*$", doc, re.MULTILINE)}
    # all four ran (quick runs PGD and Square): each verdict is a bool, and it is the
    # comparison of the reported value with the documented limit (n 40, checks on 32).
    # more-steps-lower fails here, rightly: the fixture cuts PGD to 8 steps (FAST), which
    # has not converged (measured: 8 more steps take the vote from 37.5% to 25.0%)
    limits = {"zero-gradients": ZERO_GRAD_MAX_FRACTION,
              "square-beats-white-box": max(SQUARE_MARGIN, 1.5 / 40) + 1e-9,
              "large-eps-not-zero": LARGE_EPS_MAX_ACCURACY,
              "more-steps-lower": max(MORE_STEPS_MARGIN, 1.5 / 32)}
    for c in checks:
        assert isinstance(c["passed"], bool) and c["detail"], c
        assert c["passed"] == (c["value"] <= limits[c["id"]]), c
        assert c["doc"].startswith("docs/EVAL.md#")
        assert c["doc"].split("#")[1] in anchors, f"{c['id']} has no section in docs/EVAL.md"
    assert _report(run, "paper")["masking_checks"] == []


def test_bad_inputs_are_clear_errors(run_copy, tmp_path):
    from edgempir.errors import EdgempirError, RunDirError

    with pytest.raises(AttackError, match="unknown attack"):
        evaluate(run_copy, config="quick", attacks=["nope"], n=4, progress=False)
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(AttackError, match="eps"):
            evaluate(run_copy, config="quick", eps=bad, n=4, progress=False)
    next((run_copy / "members").glob("*.safetensors")).unlink()
    with pytest.raises(RunDirError, match="weights .* missing"):
        evaluate(run_copy, config="quick", n=4, progress=False)
    with pytest.raises(EdgempirError, match="does not exist"):
        evaluate(tmp_path / "nowhere", config="quick", n=4, progress=False)
    assert not (run_copy / "eval").exists(), "nothing half-written"


def test_interrupt_inside_an_attack_keeps_finished_batches(run_copy, fast_overrides,
                                                           monkeypatch, tmp_path):
    """A kill in the middle of a long attack loses one batch, not the attack."""
    import shutil

    from edgempir.attacks.pgd import PGD

    kwargs = {"protocols": ["adaptive"], "config": "quick", "attacks": ["pgd"], "n": 16,
              "seed": 0, "batch_size": 8, "progress": False, "overrides": fast_overrides}
    fresh = tmp_path / "fresh"
    shutil.copytree(run_copy, fresh)
    expected = evaluate(fresh, **kwargs).reports["adaptive"]["results"]

    real_perturb, calls = PGD.perturb, []

    def dying(self, *args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_perturb(self, *args, **kw)

    monkeypatch.setattr(PGD, "perturb", dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(run_copy, **kwargs)
    part = run_copy / "eval" / "partial" / "adaptive-quick" / "eps-0.1"
    assert [p.name for p in part.iterdir()] == ["pgd@surrogate.rows-0-8.npz"]
    monkeypatch.setattr(PGD, "perturb", real_perturb)
    assert evaluate(run_copy, **kwargs).reports["adaptive"]["results"] == expected
    assert not list(part.glob("*.rows-*.npz")), "batches are merged once the attack is done"


# ---------------------------------------------------------------- reject policies
def test_policy_figures_on_hand_built_votes():
    from edgempir.reject import policy_figures, tune_threshold

    y = np.array([0, 0, 0, 0])
    # rows: vote, member 0, member 1, member 2 (reference 2)
    clean = {"preds": np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]]),
             "ref_conf": np.array([0.9, 0.8, 0.4, 0.95])}
    attacked = {"preds": np.array([[1, 0, 0, 1], [1, 0, 2, 1], [1, 0, 0, 1], [0, 0, 0, 1]]),
                "ref_conf": np.array([0.99, 0.9, 0.9, 0.97])}
    out = policy_figures(y, clean, [attacked], reference=2)["policies"]
    assert out["majority"]["clean_rejection_rate"] == 0.0
    assert out["majority"]["clean_accuracy_on_accepted"] == 0.75
    assert out["majority"]["wrong_and_accepted"] == 0.5          # samples 0 and 3
    # unanimous rejects sample 2 (members 0 0 1... member 0 votes 1): 1 of 4
    assert out["unanimous"]["clean_rejection_rate"] == 0.25
    assert out["unanimous"]["clean_accuracy_on_accepted"] == pytest.approx(2 / 3)
    assert out["unanimous"]["wrong_and_accepted"] == 0.25        # sample 3 (clean: 1 1 1)
    thr = out["fp32-threshold"]
    assert thr["clean_rejection_rate"] == 0.25 and thr["threshold"] == pytest.approx(0.6)
    # fp32 (member 2) wrong on sample 3 (0.95/0.97) and on sample 1 attacked? no: votes 0
    assert thr["wrong_and_accepted"] == 0.25
    assert tune_threshold(np.array([0.5, 0.5, 0.9]), 1 / 3) == 0.5
    assert tune_threshold(np.array([0.2, 0.9]), 0.0) == 0.0


def test_reject_report_table_plot_and_model_card(evaluated_run):
    run, _ = evaluated_run
    rep = _report(run, "adaptive")
    rej = rep["reject"]
    res = rep["results"][0]
    assert rej["n"] == 40 and rej["eps"] == 0.1 and rej["protocol"] == "adaptive"
    pol = rej["policies"]
    assert set(pol) == {"majority", "unanimous", "fp32-threshold"}
    # majority never rejects; under attack it is at least the protocol's worst case (the
    # policies' own attackers may add examples that break the vote too)
    assert pol["majority"]["clean_rejection_rate"] == 0.0
    assert pol["majority"]["clean_accuracy_on_accepted"] == pytest.approx(
        res["clean"]["ensemble"])
    assert pol["majority"]["wrong_and_accepted"] >= 1 - res["worst_case"]["ensemble"] - 1e-9
    # equal clean rejection rates (up to ties of the fp32 confidence)
    assert abs(pol["fp32-threshold"]["clean_rejection_rate"]
               - pol["unanimous"]["clean_rejection_rate"]) <= 1 / 40 + 1e-9
    # unanimous accepts a subset of what majority accepts: never more wrong-and-accepted
    assert pol["unanimous"]["wrong_and_accepted"] <= pol["majority"]["wrong_and_accepted"]
    for f in pol.values():
        assert 0 <= f["wrong_and_accepted"] <= 1 and f["attacker"]
    table = (run / "eval" / "table-quick.txt").read_text()
    assert "Reject policies, protocol adaptive (quick), eps 0.1, n 40" in table
    png = run / "eval" / "risk-coverage-quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((run / "eval" / "model-card-adaptive-quick.json").read_text())
    robustbench = {"link", "name", "authors", "additional_data", "number_forward_passes",
                   "dataset", "venue", "architecture", "eps", "clean_acc", "reported",
                   "autoattack_acc"}
    assert robustbench | {"threat_model", "surrogate"} <= set(card)
    assert card["autoattack_acc"] == f"{100 * res['worst_case']['ensemble']:.2f}"
    assert card["number_forward_passes"] == 3 and card["threat_model"] == "Linf"
    paper = _report(run, "paper")["results"][0]["mean_of_attacks"]["ensemble"]
    assert card["reported"] == f"{100 * paper:.2f}"
    paper_card = json.loads((run / "eval" / "model-card-paper-quick.json").read_text())
    assert paper_card["autoattack_acc"] is None and paper_card["reported"] == card["reported"]

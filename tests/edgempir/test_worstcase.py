"""WorstCase (edgempir/eval/worstcase.py) in detail: the bookkeeping behind every robust-accuracy
figure. The pure-numpy cases the mutation run of worstcase.py found untested (docs/TESTING.md,
"Mutation testing"); the end-to-end cases are in test_robustness.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgempir.eval import Planned
from edgempir.eval.worstcase import ExampleChooser, WorstCase


def _bool(rows):
    return np.array(rows, dtype=bool)


def test_unknown_pool_is_refused():
    with pytest.raises(ValueError, match="pool 'some'"):
        WorstCase(_bool([[1, 1]]), pool="some")


def test_the_callers_clean_mask_is_never_changed():
    clean = _bool([[1, 1, 1]])
    wc = WorstCase(clean, pool="all")
    wc.add(_bool([[0, 0, 0]]), [0], cascade=False)
    assert clean.tolist() == [[True, True, True]]
    assert wc.accuracy().tolist() == [0.0]


def test_clean_errors_stay_errors_and_figures_are_per_attack():
    wc = WorstCase(_bool([[1, 0, 1, 1]]), pool="all")
    # an attack's own figure is its accuracy, whatever the clean mask says
    assert wc.add(_bool([[1, 1, 0, 1]]), [0], cascade=False) == {0: 0.75}
    assert wc.accuracy().tolist() == [0.5]   # sample 1 wrong clean, sample 2 broken
    # a cascade figure counts only what is still robust
    assert wc.add(_bool([[1, 1, 1, 0]]), [0], cascade=True) == {0: 0.25}


def test_aimed_pool_touches_only_the_aimed_rows():
    wc = WorstCase(np.ones((3, 2), dtype=bool), pool="aimed")
    wc.add(_bool([[0, 0], [0, 1], [0, 0]]), [1], cascade=False)
    acc = wc.accuracy()
    assert np.isnan(acc[0]) and acc[1] == 0.5 and np.isnan(acc[2])
    assert wc.robust.tolist() == [[True, True], [False, True], [True, True]]
    # an unbounded (L2) set aimed at a row changes nothing either
    wc.add(_bool([[0, 0], [0, 0], [0, 0]]), [0, 1, 2], cascade=False, bounded=False)
    assert np.isnan(wc.accuracy()[0]) and wc.accuracy()[1] == 0.5


def test_still_robust_is_any_of_the_rows():
    wc = WorstCase(_bool([[1, 0, 0], [0, 1, 0]]), pool="all")
    assert wc.still_robust([0, 1]).tolist() == [True, True, False]
    assert wc.still_robust([1]).tolist() == [False, True, False]


def test_without_a_chooser_there_are_no_examples():
    assert WorstCase(_bool([[1]]), pool="all").examples() is None


def _job(name, aims, *, cascade=False, bounded=True):
    planned = Planned(name, "pgd", cascade=cascade)
    if not bounded:
        planned = SimpleNamespace(name=name, cascade=cascade, bounded=False)
    return SimpleNamespace(planned=planned, source="surrogate", aims=aims, key=f"{name}@s")


def _runner(preds, p_true):
    def attack(job, mask):
        x_adv = torch.full((len(mask), 1), float(len(job.planned.name)))
        return x_adv, preds[job.planned.name], p_true[job.planned.name], np.ones(len(mask))
    return attack


def test_run_records_sets_and_counts_and_keeps_examples_only_where_asked():
    y = np.array([0, 1, 2])
    wc = WorstCase(np.ones((2, 3), dtype=bool), "aimed", targets=["ensemble", "m0"], y=y,
                   examples_from=np.zeros((3, 1), np.float32))
    preds = {"ab": np.array([[0, 1, 2], [9, 1, 2]]),       # breaks m0 on sample 0
             "abcd": np.array([[9, 1, 2], [0, 1, 2]]),     # breaks the ensemble on sample 0
             "l2": np.array([[9, 9, 9], [9, 9, 9]])}       # unbounded: never counts
    p_true = {"ab": np.array([0.2, 0.2, 0.2]), "abcd": np.array([0.9, 0.1, 0.9]),
              "l2": np.zeros(3)}
    jobs = [_job("ab", ["m0"]), _job("abcd", ["ensemble"]),
            _job("l2", ["ensemble", "m0"], bounded=False)]
    wc.run(jobs, _runner(preds, p_true))
    assert wc.figures["ab"] == {"_n_attacked": {"m0": 3}, "m0": 2 / 3}
    assert wc.figures["abcd"] == {"_n_attacked": {"ensemble": 3}, "ensemble": 2 / 3}
    assert wc.figures["l2"]["ensemble"] == 0.0 and wc.figures["l2"]["m0"] == 0.0
    assert wc.accuracy().tolist() == [2 / 3, 2 / 3]
    s = wc.sets["abcd@s"]
    assert s["ok"].tolist() == [[False, True, True], [True, True, True]]
    assert s["source"] == "surrogate" and s["bounded"] is True
    assert s["preds"] is preds["abcd"] and s["ref_conf"].tolist() == [1, 1, 1]
    assert wc.sets["l2@s"]["bounded"] is False and "x_adv" not in s
    # pool "aimed": only the ensemble's own bounded sets give the kept example ("ab", aimed at
    # m0, and the unbounded "l2" never do)
    assert wc.examples()[:, 0].tolist() == [4.0, 4.0, 4.0]


def test_chooser_keeps_the_first_fooling_example_else_the_strongest_try():
    x = np.zeros((4, 1), np.float32)
    chooser = ExampleChooser(x, _bool([1, 1, 1, 0]))
    chooser.offer(np.full((4, 1), 1.0), _bool([0, 1, 1, 0]), np.array([0.9, 0.5, 0.5, 0.1]))
    chooser.offer(np.full((4, 1), 2.0), _bool([0, 1, 1, 0]), np.array([0.1, 0.4, 0.6, 0.0]))
    chooser.offer(np.full((4, 1), 3.0), _bool([1, 0, 1, 1]), np.array([0.0, 0.9, 0.5, 0.0]))
    # 0: first fooling kept; 1: fooled by the third after a weaker try; 2: the lowest p_true
    # (equal p_true does not replace); 3: wrong clean, the clean input stays
    assert chooser.result()[:, 0].tolist() == [1.0, 3.0, 1.0, 0.0]
    assert x[:, 0].tolist() == [0, 0, 0, 0]


def test_run_counts_every_other_class_as_wrong():
    """Predictions below and above the label are both wrong (ok is equality, not an order)."""
    wc = WorstCase(np.ones((1, 3), dtype=bool), "all", targets=["ensemble"],
                   y=np.array([1, 1, 1]))
    preds = {"pgd": np.array([[0, 1, 2]])}
    wc.run([_job("pgd", ["ensemble"])], _runner(preds, {"pgd": np.zeros(3)}))
    assert wc.sets["pgd@s"]["ok"].tolist() == [[False, True, False]]
    assert wc.accuracy().tolist() == [pytest.approx(1 / 3)]


def test_a_pool_name_built_at_run_time_works():
    """The pool is compared by value: a name read from a file or the command line is not
    the interned literal."""
    pool = "ALL".lower()
    wc = WorstCase(np.ones((2, 2), dtype=bool), pool=pool)
    wc.add(_bool([[1, 0], [1, 1]]), [1], cascade=False)
    assert wc.accuracy().tolist() == [0.5, 1.0]


def test_pool_all_built_at_run_time_keeps_examples_of_sets_aimed_elsewhere():
    """Under pool "all" (compared by value) a set aimed at a member fools the ensemble too."""
    wc = WorstCase(np.ones((2, 2), dtype=bool), "ALL".lower(), targets=["ensemble", "m0"],
                   y=np.array([0, 1]), examples_from=np.zeros((2, 1), np.float32))
    preds = {"ab": np.array([[5, 1], [5, 1]])}
    wc.run([_job("ab", ["m0"])], _runner(preds, {"ab": np.array([0.1, 0.2])}))
    assert wc.examples()[:, 0].tolist() == [2.0, 2.0]


def test_the_kept_example_starts_from_the_ensembles_clean_errors():
    """A sample the ensemble gets wrong clean keeps its clean input, whatever the members do."""
    wc = WorstCase(_bool([[0, 1], [1, 1]]), "all", targets=["ensemble", "m0"],
                   y=np.array([0, 1]), examples_from=np.zeros((2, 1), np.float32))
    preds = {"ab": np.array([[5, 1], [0, 1]])}
    wc.run([_job("ab", ["ensemble"])], _runner(preds, {"ab": np.array([0.1, 0.2])}))
    assert wc.examples()[:, 0].tolist() == [0.0, 2.0]

"""Robustness evaluation of a run: ``edgempir eval`` (docs/EVAL.md).

Two protocols:

- ``paper`` reproduces EMPIR's evaluation as its reference code ran it, so its table can be
  compared: FGSM, BIM, PGD and CW-L2 with the paper's parameters and eps (MNIST and
  Fashion-MNIST 0.3, CIFAR-10 0.1), labels the attacked model's own predictions (the vote's
  for the ensemble), the ensemble's gradients taken as the reference took them (FGSM and PGD
  through the mean softmax of the members that agree with the vote, recomputed at every
  step; BIM and CW through the full-precision member alone), PGD's random start unclipped,
  CW with early abort; scored with the vote against the true labels. Each member is also
  attacked alone with its own gradients (the paper's "fp32 alone" rows).
- ``adaptive`` (the headline) attacks a differentiable surrogate of the deployed ensemble
  (mean of the members' softmax, through Brevitas' straight-through quantizers) with PGD and
  restarts and AutoAttack's components, plus transfer from each member; everything is scored
  with the real combiner and reported per sample as the worst case over every adversarial
  example found for that sample.

Each protocol has named configurations (``standard``, ``quick``). Every finished
(protocol, config, eps, attack, source) result is saved atomically under
``eval/partial/`` with a fingerprint of everything that determines it, so a killed eval
resumes where it stopped and gives identical results.

The modules, in the order a call uses them:

- :mod:`.config`: protocols, configurations and their attack plans, eps lists, the subset;
- :mod:`.evaluator`: the attack runs of a plan, run resumably and scored (:mod:`.store`
  keeps what is finished under ``eval/partial/``);
- :mod:`.worstcase`: the per-sample worst case and the cascade, as one object;
- :mod:`.checks`: the gradient-masking checks, one function each, and their registry;
- :mod:`.rejection`: the reject policies under attackers aimed at them;
- :mod:`.report`: the JSON report; :mod:`.table`: its text tables and plot;
- :mod:`.run`: :func:`evaluate`, which drives them and writes the files.
"""
from __future__ import annotations

from edgempir.eval.checks import (
    CHECK_DOCS,
    CHECKS,
    LARGE_EPS_MAX_ACCURACY,
    MORE_STEPS_MARGIN,
    SQUARE_MARGIN,
    ZERO_GRAD_MAX_FRACTION,
    masking_checks,
)
from edgempir.eval.config import (
    CONFIG_NAMES,
    CONFIGS,
    PAPER_EPS,
    PROTOCOLS,
    SCHEMA,
    SCHEMA_VERSION,
    SUBSET_HOW,
    Config,
    Planned,
    choose_subset,
    get_config,
    parse_eps_list,
    select_attacks,
)
from edgempir.eval.evaluator import Evaluator, Job
from edgempir.eval.rejection import reject_report
from edgempir.eval.report import versions
from edgempir.eval.run import EvalResult, evaluate
from edgempir.eval.table import accuracy_plot, eval_tables
from edgempir.eval.worstcase import WorstCase

__all__ = [
    "CHECKS", "CHECK_DOCS", "CONFIGS", "CONFIG_NAMES", "LARGE_EPS_MAX_ACCURACY",
    "MORE_STEPS_MARGIN", "PAPER_EPS", "PROTOCOLS", "SCHEMA", "SCHEMA_VERSION", "SQUARE_MARGIN",
    "SUBSET_HOW", "ZERO_GRAD_MAX_FRACTION", "Config", "EvalResult", "Evaluator", "Job",
    "Planned", "WorstCase", "accuracy_plot", "choose_subset", "eval_tables", "evaluate",
    "get_config", "masking_checks", "parse_eps_list", "reject_report", "select_attacks",
    "versions",
]

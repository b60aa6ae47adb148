"""The worst case over a plan's attacks and their cascade, as one object
(docs/EVAL.md#reading-the-table).

In the spirit of torchattacks' ``MultiAttack``: :meth:`WorstCase.run` runs the attack runs
of a plan in order, a cascade run (AutoAttack's practice) only on the samples still robust
after the runs before it, and keeps per sample whether each target survived every example
set so far, the figure of each attack, and one adversarial example per sample.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

#: what one attack run gives: (x_adv, predictions [targets, n], surrogate's probability of
#: the true class, reference member's confidence), see ``Evaluator.score``
Scored = tuple
AttackRun = Callable[[object, np.ndarray], Scored]


class WorstCase:
    """Per-sample worst case for every target (row 0 the ensemble, then the members).

    A sample counts as robust for a target only while the target is right on the clean
    input and on every example set added so far: ``pool="all"`` takes every L-inf set for
    every target (adaptive: any example in the ball is a valid attack, whoever it was
    crafted on); ``pool="aimed"`` only the sets aimed at that target (paper). Unbounded
    (L2) sets never enter an L-inf worst case.

    With ``targets`` and ``y`` it also runs a plan (:meth:`run`); with ``examples_from``
    (the clean inputs) it chooses one example per sample (:class:`ExampleChooser`).
    """

    def __init__(self, clean_ok: np.ndarray, pool: str, *, targets: list[str] | None = None,
                 y: np.ndarray | None = None, examples_from: np.ndarray | None = None,
                 keep_x_adv: Iterable[str] = ()):
        if pool not in ("all", "aimed"):
            raise ValueError(f"pool {pool!r}")
        self.robust = np.array(clean_ok, dtype=bool, copy=True)   # [targets, n]
        self.pool = pool
        self.attacked = np.zeros(len(self.robust), dtype=bool)   # any L-inf set counted yet
        self.targets = targets
        self.y = y
        #: attack name -> {target: figure, "_n_attacked": {target: images attacked}}
        self.figures: dict[str, dict] = {}
        #: attack run key -> its example set: correctness, predictions, confidences
        self.sets: dict[str, dict] = {}
        self.keep_x_adv = set(keep_x_adv)   # runs whose examples a later check continues
        self.chooser = (ExampleChooser(examples_from, self.robust[0])
                        if examples_from is not None else None)

    def still_robust(self, rows: list[int]) -> np.ndarray:
        """Samples on which any of ``rows`` has not been broken yet (a cascade's mask)."""
        return self.robust[rows].any(axis=0)

    def add(self, ok: np.ndarray, rows: list[int], *, cascade: bool, bounded: bool = True
            ) -> dict[int, float]:
        """Add one example set (``ok``: [targets, n] correctness); return, for the aimed rows,
        the attack's figure: its own accuracy, or for a cascade the robust accuracy after it."""
        values = {r: float((self.robust[r] & ok[r]).mean() if cascade else ok[r].mean())
                  for r in rows}
        if bounded:
            if self.pool == "all":
                self.robust &= ok
                self.attacked[:] = True
            else:
                for r in rows:
                    self.robust[r] &= ok[r]
                    self.attacked[r] = True
        return values

    def accuracy(self) -> np.ndarray:
        """Worst-case accuracy per target; NaN for a target no L-inf attack was aimed at."""
        return np.where(self.attacked, self.robust.mean(axis=1), np.nan)

    def run(self, jobs: list, attack: AttackRun) -> None:
        """Run every job in order: ``attack(job, mask)`` attacks the samples of ``mask``
        (every sample, or for a cascade those still robust for the job's targets) and
        returns the scored example set, which joins the worst case."""
        for job in jobs:
            rows = [self.targets.index(t) for t in job.aims]
            p = job.planned
            mask = self.still_robust(rows) if p.cascade else np.ones(len(self.y), dtype=bool)
            x_adv, preds, p_true, ref_conf = attack(job, mask)
            ok = preds == self.y[None]
            values = self.add(ok, rows, cascade=p.cascade, bounded=p.bounded)
            for t, r in zip(job.aims, rows):
                rec = self.figures.setdefault(p.name, {"_n_attacked": {}})
                rec[t] = values[r]
                rec["_n_attacked"][t] = int(mask.sum())
            self.sets[job.key] = {"ok": ok, "source": job.source, "bounded": p.bounded,
                                  "preds": preds, "ref_conf": ref_conf}
            if job.key in self.keep_x_adv:
                self.sets[job.key]["x_adv"] = x_adv.numpy()
            # the kept example: any L-inf set counts under pool "all", only the ensemble's
            # own under "aimed"
            if self.chooser is not None and p.bounded and (self.pool == "all"
                                                           or "ensemble" in job.aims):
                self.chooser.offer(x_adv.numpy(), ok[0], p_true)

    def examples(self) -> np.ndarray | None:
        return None if self.chooser is None else self.chooser.result()


class ExampleChooser:
    """Per sample: the first example that fools the ensemble (the clean input when it is
    already misclassified), else the strongest attempt (lowest mean-softmax probability of
    the true class)."""

    def __init__(self, x: np.ndarray, clean_ok: np.ndarray):
        self.x = x.copy()
        self.fooled = ~np.asarray(clean_ok, dtype=bool)
        self.p_true = np.full(len(clean_ok), np.inf)

    def offer(self, x_adv: np.ndarray, ens_ok: np.ndarray, p_true: np.ndarray) -> None:
        fooled_now = ~ens_ok & ~self.fooled
        weaker = ~self.fooled & ens_ok & (p_true < self.p_true)
        take = fooled_now | weaker
        self.x[take] = x_adv[take]
        self.p_true[take] = p_true[take]
        self.fooled |= fooled_now

    def result(self) -> np.ndarray:
        return self.x

"""The evaluator: one protocol/configuration on one test subset (docs/EVAL.md#protocols).

It turns a plan into attack runs (:class:`Job`: one attack aimed at one source), runs them
resumably, scores every example set with the ensemble's real combiner, and hands the
bookkeeping of the worst case and the cascade to :class:`edgempir.eval.worstcase.WorstCase`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgempir.eval.config import Config, Planned
from edgempir.eval.report import eps_result
from edgempir.eval.shard import COUPLED_PARTS, MIN_ROWS, Crafting, Shard, craft_rows
from edgempir.eval.store import array_digest, digest, eps_tag
from edgempir.eval.worstcase import WorstCase

#: the run whose examples the more-steps masking check continues (checks.more_steps_lower)
MORE_STEPS_START = "pgd@surrogate"


@dataclass
class Job:
    """One attack run: ``attack`` aimed at ``source`` (``surrogate`` or ``m<i>``)."""

    planned: Planned
    source: str
    aims: list[str]               # targets whose figure this run gives: "ensemble", "m0", ...
    labels: str = "true"          # "true", "vote" (ensemble's clean decision) or "own"

    @property
    def key(self) -> str:
        # the paper's BIM on the ensemble and on the fp32 member alone share a source but
        # not their labels: two runs
        tail = "+vote-labels" if self.labels == "vote" and self.source.startswith("m") else ""
        return f"{self.planned.name}@{self.source}{tail}"


def plan_jobs(plan: tuple[Planned, ...], n_members: int, reference: int) -> list[Job]:
    """The attack runs of a plan, in order: per attack the run aimed at the ensemble, then
    those aimed at members alone (one run serves every target that shares its source)."""
    jobs: list[Job] = []
    for p in plan:
        ens_source = {"surrogate": "surrogate", "agreeing": "agreeing", "vote": "vote"}.get(
            p.ensemble_source, f"m{reference}")
        predicted = p.labels == "predicted"
        by_source: dict[str, Job] = {ens_source: Job(p, ens_source, ["ensemble"],
                                                     "vote" if predicted else "true")}
        alone: list[Job] = []  # predicted labels: a member alone never shares a run
        if p.members != "none":
            for i in (range(n_members) if p.members == "all" else [reference]):
                src = f"m{i}"
                if predicted:
                    alone.append(Job(p, src, [src], "own"))
                elif src in by_source:
                    by_source[src].aims.append(src)
                else:
                    by_source[src] = Job(p, src, [src])
        jobs.extend(by_source.values())
        jobs.extend(alone)
    return jobs


class Evaluator:
    """Runs one protocol/config on one subset; the state that attacks and scoring share."""

    def __init__(self, ens, x, y, indices, config: Config, plan, *, seed: int,
                 batch_size: int, partial_dir: Path, run_fingerprint: str,
                 progress: bool = True, echo: Callable[[str], None] = lambda s: None,
                 shard: Shard | None = None):
        import torch

        self.torch = torch
        self.ens = ens
        self.surrogate = ens.surrogate().eval()
        self.agreeing = None      # protocol paper's FGSM/PGD target, made when needed
        self.clean_pred = None    # [targets, n] clean decisions: protocol paper's labels
        self.x = x
        self.y = y
        self.indices = indices
        self.config = config
        self.plan = plan
        self.seed = seed
        self.batch_size = batch_size
        self.partial_dir = partial_dir
        self.run_fingerprint = run_fingerprint
        self.progress = progress
        self.echo = echo
        self.n_members = len(ens.members)
        self.targets = ["ensemble"] + [f"m{i}" for i in range(self.n_members)]
        self.jobs = plan_jobs(plan, self.n_members, ens.reference)
        self.subset_digest = array_digest(indices.astype(np.int64))
        self.attack_seconds = 0.0
        self.last_sets: dict[str, dict] = {}
        self.shard = shard or Shard()
        self._clean_scores: tuple[np.ndarray, ...] | None = None

    # ---------------------------------------------------------------- models and decisions
    def source_model(self, source: str):
        if source == "agreeing":
            from edgempir.ensemble import AgreeingMembersAverage

            self.agreeing = self.agreeing or AgreeingMembersAverage(self.ens).eval()
            return self.agreeing
        if source == "vote":
            return self.ens  # the attack reads the members' logits (attacks aimed at the vote)
        return self.surrogate if source == "surrogate" else self.ens.members[int(source[1:])]

    def attack_labels(self, job: Job):
        """The labels an attack moves away from: true ones, or (protocol paper) the clean
        decision of the ensemble (``vote``) or of the attacked member (``own``)."""
        if job.labels == "true":
            return self.y
        row = 0 if job.labels == "vote" else 1 + int(job.source[1:])
        return self.torch.from_numpy(self.clean_pred[row].astype(np.int64))

    def decide_fn(self, job: Job) -> Callable | None:
        if job.planned.judge == "own" or job.source not in ("surrogate", "vote"):
            return None  # the attacked model's own argmax (a member alone; paper's rules)
        ens = self.ens

        def decide(xb):
            with self.torch.no_grad():
                return ens(xb).argmax(dim=1)
        return decide

    def score(self, x_adv, rows: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions [targets, n] (ensemble with its real combiner, then members), the
        surrogate's probability of the true class (to rank failed attempts) and the reference
        member's top softmax probability (the fp32 threshold's confidence, ``reject``).

        ``rows``: the rows that differ from the clean inputs (the others take the clean
        scores, computed once); the rows are scored in shares over the ranks."""
        if rows is None or self._clean_scores is None:
            rows = np.arange(len(x_adv))
        preds, p_true, ref_conf = self.shard.map_rows(
            lambda part: self._score_rows(x_adv, rows[part]), len(rows))
        if len(rows) == len(x_adv):
            scores = (preds.T, p_true, ref_conf)
        else:
            scores = tuple(a.copy() for a in self._clean_scores)
            scores[0][:, rows], scores[1][rows], scores[2][rows] = preds.T, p_true, ref_conf
        if self._clean_scores is None and x_adv is self.x:
            self._clean_scores = scores
        return scores

    def _score_rows(self, x_adv, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Row-major scores of ``x_adv[rows]``: predictions [b, targets], p_true, ref_conf."""
        from edgempir.ensemble import combine

        torch = self.torch
        preds, p_true, ref_conf = [], [], []
        with torch.no_grad():
            for s in range(0, len(rows), self.batch_size):
                idx = torch.from_numpy(rows[s:s + self.batch_size])
                logits = self.ens.member_logits(x_adv[idx])
                decision = combine(logits, self.ens.combiner, self.ens.reference).argmax(1)
                preds.append(torch.cat([decision[None], logits.argmax(dim=2)]).T.numpy())
                probs = logits.softmax(dim=2).mean(dim=0)
                p_true.append(probs.gather(1, self.y[idx][:, None])[:, 0].numpy())
                ref_conf.append(logits[self.ens.reference].softmax(dim=1).amax(dim=1).numpy())
        n_targets = 1 + self.n_members
        return (np.concatenate(preds) if preds else np.zeros((0, n_targets), np.int64),
                np.concatenate(p_true) if p_true else np.zeros(0, np.float32),
                np.concatenate(ref_conf) if ref_conf else np.zeros(0, np.float32))

    # ---------------------------------------------------------------- one attack run
    def run_job(self, job: Job, eps: float | None, mask: np.ndarray):
        """x_adv for every sample (the input itself where ``mask`` is False), resumable,
        sharded over the ranks (the same on every rank)."""
        from edgempir.attacks import make_attack

        torch = self.torch
        p = job.planned
        attack = make_attack(p.attack, eps=eps, seed=self.seed, **p.params_for(job.source))
        # query-only attacks pay Python overhead per query, not per image: big batches,
        # never cut for the ranks (cutting a batch adds its per-query cost to each part)
        step = self.batch_size if attack.white_box else max(self.batch_size, 2000)
        min_rows = MIN_ROWS if attack.white_box else step
        if attack.batch_rows:  # the reference's own batches (CW with early abort)
            step = min_rows = attack.batch_rows
        # the batching matters only to an attack that couples a batch's images
        fingerprint = digest({"run": self.run_fingerprint, "subset": self.subset_digest,
                              "attack": attack.describe(), "source": job.source,
                              "labels": job.labels, "judge": p.judge,
                              "mask": array_digest(mask),
                              "batch": ([step, COUPLED_PARTS, min_rows]
                                        if attack.batch_coupled else None)})
        path = self.partial_dir / eps_tag(eps) / f"{job.key}.npz"
        what = f"{self.config.protocol} {eps_label(eps)} {p.name} -> " \
               f"{source_label(job.source, self.ens)}"
        model = self.source_model(job.source)
        decide = self.decide_fn(job)
        labels = self.attack_labels(job)
        ids = torch.from_numpy(self.indices.astype(np.int64))

        def craft(rows: np.ndarray) -> np.ndarray:
            idx = torch.from_numpy(rows)
            return attack(model, self.x[idx], labels[idx], decide=decide,
                          ids=ids[idx]).numpy()

        crafting = Crafting(path, fingerprint, tuple(self.x.shape[1:]), step,
                            attack.batch_coupled, min_rows, what, self.progress)
        rows = np.flatnonzero(mask)
        x_adv_rows, seconds, resumed = craft_rows(self.shard, crafting, rows, craft)
        if resumed and self.progress:
            self.echo(f"{what}: resumed from {path}")
        self.attack_seconds += seconds
        x_adv = self.x.clone()
        if len(rows):
            x_adv[torch.from_numpy(rows)] = torch.from_numpy(x_adv_rows)
        return x_adv, seconds

    def _scored_run(self, job: Job, eps: float, mask: np.ndarray, unbounded_cache: dict):
        """(x_adv, predictions, p_true, ref_conf) of one run at ``eps``."""
        p = job.planned
        if not p.bounded and job.key in unbounded_cache:
            return unbounded_cache[job.key]
        x_adv, _ = self.run_job(job, eps if p.bounded else None, mask)
        scored = (x_adv, *self.score(x_adv, rows=np.flatnonzero(mask)))
        if not p.bounded:  # CW-L2 ignores eps: run once, reuse at every eps
            unbounded_cache[job.key] = scored
        return scored

    # ---------------------------------------------------------------- one eps
    def evaluate_eps(self, eps: float, clean_pred: np.ndarray, keep_examples: bool,
                     unbounded_cache: dict) -> dict:
        """Every run of the plan at ``eps``: the eps's entry of the report's ``results``
        (with ``_examples``, the chosen adversarial examples, when ``keep_examples``)."""
        y = self.y.numpy()
        self.clean_pred = clean_pred
        clean_ok = clean_pred == y[None]
        worst = WorstCase(clean_ok, self.config.pool, targets=self.targets, y=y,
                          examples_from=self.x.numpy() if keep_examples else None,
                          keep_x_adv=[MORE_STEPS_START])
        worst.run(self.jobs, lambda job, mask: self._scored_run(job, eps, mask,
                                                                unbounded_cache))
        self.last_sets = worst.sets
        result = eps_result(self, eps, clean_ok, worst)
        if keep_examples:
            result["_examples"] = worst.examples()
        return result

    def worst_case_over(self) -> str:
        names = [p.name for p in self.plan if p.bounded]
        if self.config.pool == "all":
            extra = ", transfer from each member" if any(p.name == "pgd" for p in self.plan) \
                else ""
            return (f"per sample, every L-inf example found ({', '.join(names)}{extra}; "
                    "those aimed at members included) and the clean input")
        return (f"per sample, the clean input and the L-inf attacks aimed at this model "
                f"({', '.join(names)}); CW-L2 is reported apart (other norm)")


def eps_label(eps: float | None) -> str:
    return "unbounded" if eps is None else f"eps={eps:.4g}"


def source_label(source: str, ens) -> str:
    if source == "surrogate":
        return "ensemble (mean-softmax surrogate)"
    if source == "agreeing":
        return "ensemble (mean softmax of the members agreeing with the vote)"
    if source == "vote":
        return "ensemble (aimed at the vote)"
    i = int(source[1:])
    return f"member {i} ({ens.specs[i]})"

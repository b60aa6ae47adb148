"""Robustness evaluation of a run: protocols, configurations, worst case, masking checks.

Two protocols (docs/EVAL.md):

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
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgempir import provenance
from edgempir.attacks.base import AttackError, check_eps
from edgempir.data import DEFAULT_EPS  # one table for eval and adversarial training

SCHEMA = "edgempir.eval"
SCHEMA_VERSION = 1
PROTOCOLS = ("paper", "adaptive")
DOC = "docs/EVAL.md"


# ------------------------------------------------------------------ plans and configurations
@dataclass(frozen=True)
class Planned:
    """One attack of a configuration.

    ``ensemble_source``: where the ensemble's gradients come from: ``surrogate`` (mean
    softmax), ``reference`` (the vote's reference member, the fp32 one: the paper's BIM/CW),
    ``agreeing`` (mean softmax of the members agreeing with the vote: the paper's
    FGSM/PGD, :class:`edgempir.ensemble.AgreeingMembersAverage`) or ``vote`` (the ensemble
    itself: the attack reads every member's logits and aims at the coalitions that decide
    the vote, ``edgempir.attacks._vote``).
    ``labels``: what the attack moves away from: ``true`` labels, or ``predicted`` (the
    reference's: the vote's clean decision for the ensemble, a member's own clean
    prediction when it is attacked alone).
    ``cascade``: run only on samples still robust after the previous attacks (AutoAttack's
    practice; the attack's figure is then the robust accuracy after it, cumulative).
    ``judge``: what decides success inside the attack (restarts, CW's best iterate):
    ``real`` is the target's deployed decision (the vote), ``own`` the attacked model's argmax.
    """

    name: str
    attack: str
    params: dict = field(default_factory=dict)
    ensemble_source: str = "surrogate"
    #: which members are also attacked alone with their own gradients: "all", "reference"
    #: (the fp32 member only: the paper's "fp32 alone" row) or "none"
    members: str = "all"
    cascade: bool = False
    judge: str = "real"
    #: parameters that differ when the attack is aimed at a member alone (quick: shorter PGD
    #: for the transfer sources, undefended members need few steps)
    member_params: dict = field(default_factory=dict)
    labels: str = "true"

    def params_for(self, source: str) -> dict:
        return {**self.params, **self.member_params} if source.startswith("m") else self.params

    @property
    def bounded(self) -> bool:
        return self.attack != "cw"


@dataclass(frozen=True)
class Config:
    protocol: str
    name: str
    summary: str                  # what it runs, for the label
    n: int | None                 # default number of test images; None: the whole test set
    plan: tuple[Planned, ...]
    pool: str                     # worst case over "all" example sets, or "aimed" ones only
    checks: dict | None = None    # masking-check settings (adaptive only)
    reject: dict | None = None    # reject-policy settings: aimed attacks' steps and targets

    @property
    def label(self) -> str:
        if self.name == "standard":
            return f"standard ({self.summary})"
        return f"{self.name} (lighter than standard: {self.summary})"


# the reference's eps per data set (examples/mnist_attack.py, cifar10_attack.py; the
# paper uses MNIST's for Fashion-MNIST too)
PAPER_EPS = {"mnist": 0.3, "fashion-mnist": 0.3, "cifar10": 0.1, "synthetic": 0.3}


def _paper_plan(members: str) -> tuple[Planned, ...]:
    """The reference code's attacks (sancharisen/EMPIR, examples/mnist_attack.py with its
    bundled cleverhans/attacks.py); docs/EVAL.md#protocol-paper lists what is kept."""
    ref = {"members": members, "judge": "own", "labels": "predicted"}
    return (
        Planned("fgsm", "fgsm", {}, "agreeing", **ref),
        Planned("bim", "bim", {"steps": 40, "step_size": 0.01}, "reference", **ref),
        Planned("pgd", "pgd-ref", {"steps": 40, "step_size": 0.01}, "agreeing", **ref),
        Planned("cw", "cw", {"steps": 50, "lr": 0.1, "initial_const": 10.0,
                             "abort_early": True}, "reference", **ref),
    )


def _adaptive_plan(pgd_steps: int, restarts: int, apgd_steps: int, targeted: bool,
                   square_queries: int, members_everywhere: bool,
                   member_pgd_steps: int | None = None,
                   vote_attacks: tuple[Planned, ...] = ()) -> tuple[Planned, ...]:
    """PGD first on everything (aimed at the ensemble and at each member: the transfer
    sources), then the attacks aimed at the vote, then AutoAttack's components, in cascade
    on what is still robust."""
    more = "all" if members_everywhere else "none"
    member_params = {"steps": member_pgd_steps} if member_pgd_steps else {}
    plan = [Planned("pgd", "pgd", {"steps": pgd_steps, "rel_step": 0.25, "step_size": None,
                                   "random_start": True, "restarts": restarts},
                    member_params=member_params),
            *vote_attacks,
            Planned("apgd-ce", "apgd-ce", {"steps": apgd_steps, "restarts": 1}, members=more,
                    cascade=True)]
    if targeted:
        plan += [Planned("apgd-t", "apgd-t", {"steps": apgd_steps, "restarts": 1},
                         members=more, cascade=True),
                 Planned("fab-t", "fab-t", {"steps": apgd_steps, "restarts": 1}, members=more,
                         cascade=True)]
    plan.append(Planned("square", "square", {"n_queries": square_queries, "restarts": 1},
                        members=more, cascade=True))
    return tuple(plan)


def _vote_attacks(steps: int, targets: int, apgd: bool) -> tuple[Planned, ...]:
    """Targeted searches aimed at the deployed vote (issue 14): every coalition of members
    that can decide it (for three members: each pair, and the reference with the low-bit
    pair split) towards each of the ``targets`` likeliest wrong classes, through the members'
    own gradients, each iterate judged by the real vote; with ``apgd`` also the same searches
    with APGD's step-size schedule. In cascade: only what the surrogate attacks left robust
    is searched, so the cost is a few dozen images, not n."""
    plan = [Planned("vote-pgd", "vote-pgd", {"steps": steps, "rel_step": 0.1, "targets": targets,
                                             "random_start": True},
                    ensemble_source="vote", members="none", cascade=True)]
    if apgd:
        plan.append(Planned("vote-apgd", "vote-apgd", {"steps": steps, "targets": targets},
                            ensemble_source="vote", members="none", cascade=True))
    return tuple(plan)


CONFIGS: dict[tuple[str, str], Config] = {
    ("paper", "standard"): Config(
        "paper", "standard", "FGSM, BIM-40, PGD-40, CW-L2-50 as the reference code ran them, "
        "on the whole test set", None, _paper_plan("all"), pool="aimed"),
    ("paper", "quick"): Config(
        "paper", "quick", "the same attacks, default n 300 instead of the whole test set; of "
        "the members only "
        "the fp32 one is attacked alone (the paper's 'fp32 alone' row)",
        300, _paper_plan("reference"), pool="aimed"),
    ("adaptive", "standard"): Config(
        "adaptive", "standard",
        "PGD-100 x5 restarts, vote-PGD-100 and vote-APGD-100 aimed at the vote (3 likeliest "
        "wrong classes), AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square 5000 queries), "
        "transfer from each member",
        1000, _adaptive_plan(100, 5, 100, True, 5000, True,
                             vote_attacks=_vote_attacks(100, 3, apgd=True)), pool="all",
        checks={"n": 200, "large_eps": 0.5, "large_eps_steps": 50, "more_steps_factor": 2},
        reject={"steps": 100, "targets": 3}),
    ("adaptive", "quick"): Config(
        "adaptive", "quick",
        "default n 300, PGD-50 x1 on the ensemble, PGD-40 on each member (transfer), "
        "vote-PGD-50 aimed at the vote (2 likeliest wrong classes), APGD-CE-50 and Square "
        "300 queries on the ensemble only; no APGD-T, no FAB-T, no vote-APGD",
        300, _adaptive_plan(50, 1, 50, False, 300, False, member_pgd_steps=40,
                            vote_attacks=_vote_attacks(50, 2, apgd=False)), pool="all",
        checks={"n": 32, "large_eps": 0.5, "large_eps_steps": 10, "more_steps_factor": 2},
        reject={"steps": 50, "targets": 2}),
}
CONFIG_NAMES = ("standard", "quick")


def get_config(protocol: str, name: str) -> Config:
    if protocol not in PROTOCOLS:
        raise AttackError(f"unknown protocol {protocol!r}; choose one of "
                          f"{', '.join(PROTOCOLS)} (or 'both')")
    if (protocol, name) not in CONFIGS:
        raise AttackError(f"unknown configuration {name!r}; choose one of "
                          f"{', '.join(CONFIG_NAMES)}")
    return CONFIGS[(protocol, name)]


def select_attacks(configs: list[Config], names: list[str] | None
                   ) -> list[tuple[Planned, ...]]:
    """The plan of each config restricted to ``names`` (every name must belong to at least
    one of the protocols, and every protocol must keep at least one attack)."""
    if not names:
        return [c.plan for c in configs]
    from edgempir.attacks import REGISTRY, canonical_name

    wanted = [canonical_name(n) for n in names if n.strip()]
    plans = []
    for n in wanted:
        if not any(n == p.name for c in configs for p in c.plan):
            known = sorted({p.name for c in configs for p in c.plan})
            where = "" if n in REGISTRY else f"; registered attacks: {', '.join(REGISTRY)}"
            protos = " and ".join(c.protocol for c in configs)
            raise AttackError(f"unknown attack {n!r} for protocol {protos}; choose from "
                              f"{', '.join(known)}{where}")
    for config in configs:
        plan = tuple(p for p in config.plan if p.name in wanted)
        if not plan:
            raise AttackError(f"none of the attacks {', '.join(wanted)} is part of protocol "
                              f"{config.protocol}; its attacks are "
                              f"{', '.join(p.name for p in config.plan)}")
        plans.append(plan)
    return plans


def parse_eps_list(text: str | None, dataset: str, protocol: str | None = None) -> list[float]:
    """``"0.05,0.1"``, ``"8/255"``; None -> the data set's default eps (protocol paper: the
    reference's, ``PAPER_EPS``)."""
    if text is None or not str(text).strip():
        table = PAPER_EPS if protocol == "paper" else DEFAULT_EPS
        return [table.get(dataset, 0.1)]
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(part)
        except (ValueError, ZeroDivisionError):
            raise AttackError(f"eps {part!r} is not a number; give e.g. 0.1, 8/255 or a "
                              "comma-separated list 0.05,0.1,0.2") from None
        values.append(check_eps(value, "Linf"))
    if not values:
        raise AttackError("--eps is empty; give e.g. 0.1 or 0.05,0.1,0.2")
    return list(dict.fromkeys(values))


def choose_subset(n_test: int, n: int, seed: int) -> np.ndarray:
    """Sorted test-set indices: ``n`` drawn without replacement by ``default_rng(seed)``."""
    if n <= 0:
        raise AttackError(f"--n {n}: need at least one test image")
    if n >= n_test:
        return np.arange(n_test, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_test, size=n, replace=False)).astype(np.int64)


SUBSET_HOW = ("numpy.sort(numpy.random.default_rng(seed).choice(n_test, n, replace=False)) "
              "over the data set's test split (all of it, in order, when n >= n_test)")


# ------------------------------------------------------------------ the evaluation
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


def _jobs(plan: tuple[Planned, ...], n_members: int, reference: int) -> list[Job]:
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


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _eps_tag(eps: float | None) -> str:
    return "unbounded" if eps is None else f"eps-{eps:.6g}".replace("/", "_")


class Evaluator:
    """Runs one protocol/config on one subset; the state that attacks and scoring share."""

    def __init__(self, ens, x, y, indices, config: Config, plan, *, seed: int,
                 batch_size: int, partial_dir: Path, run_fingerprint: str,
                 progress: bool = True, echo: Callable[[str], None] = lambda s: None):
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
        self.jobs = _jobs(plan, self.n_members, ens.reference)
        self.subset_digest = hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()
        self.attack_seconds = 0.0
        self.last_sets: dict[str, dict] = {}

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

    def score(self, x_adv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions [targets, n] (ensemble with its real combiner, then members), the
        surrogate's probability of the true class (to rank failed attempts) and the reference
        member's top softmax probability (the fp32 threshold's confidence, ``reject``)."""
        from edgempir.ensemble import combine

        torch = self.torch
        preds, p_true, ref_conf = [], [], []
        with torch.no_grad():
            for s in range(0, len(x_adv), self.batch_size):
                xb = x_adv[s:s + self.batch_size]
                logits = self.ens.member_logits(xb)
                decision = combine(logits, self.ens.combiner, self.ens.reference).argmax(1)
                preds.append(torch.cat([decision[None], logits.argmax(dim=2)]).numpy())
                probs = logits.softmax(dim=2).mean(dim=0)
                yb = self.y[s:s + self.batch_size]
                p_true.append(probs.gather(1, yb[:, None])[:, 0].numpy())
                ref_conf.append(logits[self.ens.reference].softmax(dim=1).amax(dim=1).numpy())
        return (np.concatenate(preds, axis=1), np.concatenate(p_true),
                np.concatenate(ref_conf))

    # ---------------------------------------------------------------- one attack run
    def run_job(self, job: Job, eps: float | None, mask: np.ndarray):
        """x_adv for every sample (the input itself where ``mask`` is False), resumable."""
        from edgempir.attacks import make_attack

        torch = self.torch
        p = job.planned
        attack = make_attack(p.attack, eps=eps, seed=self.seed, **p.params_for(job.source))
        fingerprint = _digest({"run": self.run_fingerprint, "subset": self.subset_digest,
                               "attack": attack.describe(), "source": job.source,
                               "labels": job.labels, "judge": p.judge, "mask": hashlib.sha256(
                                   mask.tobytes()).hexdigest(), "batch": self.batch_size})
        path = self.partial_dir / _eps_tag(eps) / f"{job.key}.npz"
        cached = _load_partial(path, fingerprint, (int(mask.sum()),) + tuple(self.x.shape[1:]))
        if cached is not None:
            x_adv_rows, seconds = cached
            if self.progress:
                self.echo(f"{self.config.protocol} {_eps_label(eps)} {p.name} -> "
                          f"{_source_label(job.source, self.ens)}: resumed from {path}")
        else:
            model = self.source_model(job.source)
            decide = self.decide_fn(job)
            labels = self.attack_labels(job)
            rows = np.flatnonzero(mask)
            out = []
            seconds = 0.0
            bar = _bar(len(rows), f"{self.config.protocol} {_eps_label(eps)} {p.name} -> "
                       f"{_source_label(job.source, self.ens)}", self.progress)
            # query-only attacks pay Python overhead per query, not per image: one big batch
            step = self.batch_size if attack.white_box else max(self.batch_size, 2000)
            chunks = []
            for s in range(0, len(rows), step):
                # every batch is kept as soon as it is done: a kill inside a long attack
                # (PGD-100 x5 on 1000 images) loses one batch, not the attack
                chunk = path.with_name(f"{path.stem}.batch-{s}.npz")
                chunks.append(chunk)
                cached_chunk = _load_partial(chunk, fingerprint, (len(rows[s:s + step]),)
                                             + tuple(self.x.shape[1:]))
                if cached_chunk is None:
                    t0 = time.perf_counter()
                    idx = torch.from_numpy(rows[s:s + step])
                    adv = attack(model, self.x[idx], labels[idx], decide=decide).numpy()
                    chunk_seconds = time.perf_counter() - t0
                    _save_partial(chunk, fingerprint, adv, chunk_seconds)
                else:
                    adv, chunk_seconds = cached_chunk
                out.append(adv)
                seconds += chunk_seconds
                bar.update(len(adv))
            bar.close()
            shape = (0,) + tuple(self.x.shape[1:])
            x_adv_rows = np.concatenate(out) if out else np.zeros(shape, np.float32)
            _save_partial(path, fingerprint, x_adv_rows, seconds)
            for chunk in chunks:
                chunk.unlink(missing_ok=True)
        self.attack_seconds += seconds
        x_adv = self.x.clone()
        if mask.any():
            x_adv[torch.from_numpy(np.flatnonzero(mask))] = torch.from_numpy(x_adv_rows)
        return x_adv, seconds

    # ---------------------------------------------------------------- one eps
    def evaluate_eps(self, eps: float, clean_pred: np.ndarray, keep_examples: bool,
                     unbounded_cache: dict) -> dict:
        y = self.y.numpy()
        self.clean_pred = clean_pred
        clean_ok = clean_pred == y[None]
        worst = WorstCase(clean_ok, self.config.pool)
        records: dict[str, dict] = {}
        per_set: dict[str, dict] = {}
        chosen = _Chooser(self.x.numpy(), clean_ok[0]) if keep_examples else None
        for job in self.jobs:
            p = job.planned
            rows = [self.targets.index(t) for t in job.aims]
            mask = worst.still_robust(rows) if p.cascade else np.ones(len(y), dtype=bool)
            if not p.bounded and job.key in unbounded_cache:
                x_adv, preds, p_true, ref_conf = unbounded_cache[job.key]
            else:
                x_adv, _ = self.run_job(job, eps if p.bounded else None, mask)
                preds, p_true, ref_conf = self.score(x_adv)
                if not p.bounded:  # CW-L2 ignores eps: run once, reuse at every eps
                    unbounded_cache[job.key] = (x_adv, preds, p_true, ref_conf)
            ok = preds == y[None]
            values = worst.add(ok, rows, cascade=p.cascade, bounded=p.bounded)
            for t, r in zip(job.aims, rows):
                rec = records.setdefault(p.name, {"_n_attacked": {}})
                rec[t] = values[r]
                rec["_n_attacked"][t] = int(mask.sum())
            per_set[job.key] = {"ok": ok, "source": job.source, "bounded": p.bounded,
                                "preds": preds, "ref_conf": ref_conf}
            if job.key == "pgd@surrogate":  # the more-steps check continues from these
                per_set[job.key]["x_adv"] = x_adv.numpy()
            if chosen is not None and p.bounded and (self.config.pool == "all"
                                                     or "ensemble" in job.aims):
                chosen.offer(x_adv.numpy(), ok[0], p_true)
        worst_acc = worst.accuracy()
        self.last_sets = per_set
        result = {"eps": eps, "clean": _fig(clean_ok.mean(axis=1)), "attacks": {},
                  "worst_case": _fig(worst_acc)}
        for p in self.plan:
            rec = records.get(p.name, {})
            entry = {"ensemble": rec.get("ensemble"),
                     "members": [rec.get(f"m{i}") for i in range(self.n_members)],
                     "mode": "cascade" if p.cascade else "all",
                     "norm": "Linf" if p.bounded else "L2",
                     "eps": eps if p.bounded else None,
                     "gradients": _gradients_label(p, self.ens),
                     "n_attacked": rec.get("_n_attacked", {})}
            if not p.bounded:
                entry["in_worst_case"] = False
            result["attacks"][p.name] = entry
        if self.config.protocol == "adaptive":
            for i in range(self.n_members):
                key = f"pgd@m{i}"
                if key in per_set:
                    ok = per_set[key]["ok"]
                    result["attacks"][f"transfer-m{i}"] = {
                        "ensemble": float(ok[0].mean()),
                        "members": [float(v) for v in ok[1:].mean(axis=1)],
                        "mode": "all", "norm": "Linf", "eps": eps,
                        "gradients": f"member {i} ({self.ens.specs[i]}) alone, PGD; "
                                     "scored on the ensemble (transfer)",
                        "n_attacked": {"ensemble": len(y)}}
        if self.config.protocol == "paper":
            # the paper's "mean of attacks" column: every attack, CW-L2 included
            names = list(result["attacks"])
            result["mean_of_attacks"] = {
                "ensemble": _mean([result["attacks"][n]["ensemble"] for n in names]),
                "members": [_mean([result["attacks"][n]["members"][i] for n in names])
                            for i in range(self.n_members)],
                "over": names}
        result["worst_case"]["over"] = self.worst_case_over()
        if chosen is not None:
            result["_examples"] = chosen.result()
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


def _fig(values) -> dict:
    values = [None if v is None or np.isnan(v) else float(v) for v in values]
    return {"ensemble": values[0], "members": values[1:]}


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _eps_label(eps: float | None) -> str:
    return "unbounded" if eps is None else f"eps={eps:.4g}"


def _source_label(source: str, ens) -> str:
    if source == "surrogate":
        return "ensemble (mean-softmax surrogate)"
    if source == "agreeing":
        return "ensemble (mean softmax of the members agreeing with the vote)"
    if source == "vote":
        return "ensemble (aimed at the vote)"
    i = int(source[1:])
    return f"member {i} ({ens.specs[i]})"


def _gradients_label(p: Planned, ens) -> str:
    if p.ensemble_source == "reference":
        i = ens.reference
        ens_part = f"ensemble: member {i} ({ens.specs[i]}) alone, as the reference code did"
    elif p.ensemble_source == "agreeing":
        ens_part = ("ensemble: mean softmax probabilities of the members agreeing with the "
                    "vote, recomputed at every step, under cross-entropy as if they were "
                    "logits (the reference code's combinedAvgCorrectProb and loss)")
    elif p.ensemble_source == "vote":
        ens_part = ("ensemble: each member's own gradients through the straight-through "
                    "quantizers, targeted at the coalitions of members that decide the vote")
    elif p.attack == "square":
        ens_part = "ensemble: queries to the mean-softmax surrogate (no gradients)"
    else:
        ens_part = "ensemble: mean-softmax surrogate through the straight-through quantizers"
    who = {"all": "each member alone", "reference": f"member {ens.reference} alone",
           "none": "not attacked alone"}[p.members]
    labels = ("; labels: the vote's clean decision (ensemble), the member's own clean "
              "prediction (members alone)") if p.labels == "predicted" else ""
    return f"{ens_part}; members: {who}{labels}"


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False,
                dynamic_ncols=True)


class WorstCase:
    """Per-sample worst case for every target (row 0 the ensemble, then the members).

    A sample counts as robust for a target only while the target is right on the clean
    input and on every example set added so far: ``pool="all"`` takes every L-inf set for
    every target (adaptive: any example in the ball is a valid attack, whoever it was
    crafted on); ``pool="aimed"`` only the sets aimed at that target (paper). Unbounded
    (L2) sets never enter an L-inf worst case.
    """

    def __init__(self, clean_ok: np.ndarray, pool: str):
        if pool not in ("all", "aimed"):
            raise ValueError(f"pool {pool!r}")
        self.robust = np.array(clean_ok, dtype=bool, copy=True)   # [targets, n]
        self.pool = pool
        self.attacked = np.zeros(len(self.robust), dtype=bool)   # any L-inf set counted yet

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


class _Chooser:
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


# ------------------------------------------------------------------ partial results
def _load_partial(path: Path, fingerprint: str, shape: tuple[int, ...]):
    """A finished attack kept by an earlier eval, or None (recompute it): also when the
    file's fingerprint matches but its array has the wrong shape or values outside [0, 1]."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or z["x_adv"].shape != shape:
                return None
            x_adv, seconds = z["x_adv"].astype(np.float32), float(z["seconds"])
    except (OSError, KeyError, ValueError, EOFError, zlib.error):
        return None
    if not (np.isfinite(x_adv).all() and x_adv.min(initial=0) >= 0 and x_adv.max(initial=1) <= 1
            and np.isfinite(seconds)):
        return None
    return x_adv, seconds


def _save_partial(path: Path, fingerprint: str, x_adv: np.ndarray, seconds: float) -> None:
    import io

    from edgempir.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, x_adv=np.ascontiguousarray(x_adv, dtype=np.float32),
             fingerprint=np.array(fingerprint), seconds=np.array(seconds))
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------ masking checks
CHECK_DOCS = {
    "zero-gradients": f"{DOC}#zero-gradients",
    "square-beats-white-box": f"{DOC}#square-beats-white-box",
    "large-eps-not-zero": f"{DOC}#large-eps-not-zero",
    "more-steps-lower": f"{DOC}#more-steps-lower",
}
# thresholds, documented in docs/EVAL.md
ZERO_GRAD_MAX_FRACTION = 0.01     # of the samples
SQUARE_MARGIN = 0.002             # AutoAttack's checks.py
LARGE_EPS_MAX_ACCURACY = 0.05
MORE_STEPS_MARGIN = 0.02


def _check(check_id: str, passed: bool | None, detail: str, value=None) -> dict:
    return {"id": check_id, "passed": passed, "detail": detail, "doc": CHECK_DOCS[check_id],
            "value": value}


def masking_checks(ev: Evaluator, eps: float, first: dict, settings: dict) -> list[dict]:
    torch = ev.torch
    n = min(int(settings["n"]), len(ev.y))
    xs, ys = ev.x[:n], ev.y[:n]
    checks = []

    # 1. zero gradients through the surrogate at the clean inputs
    from edgempir.attacks.base import frozen
    from edgempir.attacks.pgd import input_gradient

    with frozen(ev.surrogate):
        grads = torch.cat([input_gradient(ev.surrogate, xs[s:s + ev.batch_size],
                                          ys[s:s + ev.batch_size])
                           for s in range(0, n, ev.batch_size)])
    zero_samples = int((grads.flatten(1).abs().sum(dim=1) == 0).sum())
    zero_entries = float((grads == 0).float().mean())
    frac = zero_samples / max(n, 1)
    checks.append(_check(
        "zero-gradients", frac <= ZERO_GRAD_MAX_FRACTION,
        f"{zero_samples} of {n} clean inputs ({100 * frac:.1f}%) have an all-zero input "
        f"gradient through the mean-softmax surrogate ({100 * zero_entries:.1f}% of all "
        f"gradient entries are zero); limit {100 * ZERO_GRAD_MAX_FRACTION:.0f}% of inputs",
        frac))

    # 2. the query-only Square beats the white-box attacks (cumulative, AutoAttack's rule)
    attacks = first["attacks"]
    if "square" in attacks and attacks["square"]["ensemble"] is not None:
        white = [a["ensemble"] for name, a in attacks.items()
                 if name in {p.name for p in ev.plan if p.name != "square"}
                 and a["ensemble"] is not None]
        if white:
            best_white = min(white)
            gain = best_white - attacks["square"]["ensemble"]
            margin = max(SQUARE_MARGIN, 1.5 / len(ev.y))
            checks.append(_check(
                # 1e-9: 0.6135 - 0.6115 is 0.0020000000000000018 in floats, not above 0.002
                "square-beats-white-box", gain <= margin + 1e-9,
                f"Square (queries only) lowered the ensemble's robust accuracy from "
                f"{100 * best_white:.2f}% (after the white-box attacks and transfer) to "
                f"{100 * attacks['square']['ensemble']:.2f}%; allowed drop "
                f"{100 * margin:.2f} points", gain))
    else:
        checks.append(_check("square-beats-white-box", None,
                             "not run: square is not part of this evaluation"))

    # 3. a very large eps must bring the ensemble near 0%
    from edgempir.attacks import make_attack

    big = float(settings["large_eps"])
    attack = make_attack("pgd", eps=big, seed=ev.seed, steps=int(settings["large_eps_steps"]),
                         rel_step=0.1, restarts=1)

    def craft_big(xb, yb, sl):
        return attack(ev.surrogate, xb, yb)

    acc_big = float(_attacked_ok(ev, craft_big, xs, ys, f"check large-eps eps={big:g} pgd",
                                 attack.describe()).mean())
    checks.append(_check(
        "large-eps-not-zero", acc_big <= LARGE_EPS_MAX_ACCURACY,
        f"PGD-{settings['large_eps_steps']} at eps {big:g} leaves the ensemble (vote) "
        f"{100 * acc_big:.2f}% accurate on {n} images; expected <= "
        f"{100 * LARGE_EPS_MAX_ACCURACY:.0f}%", acc_big))

    # 4. more PGD steps must not keep lowering the accuracy: continue the configured PGD
    # from where it stopped for (factor - 1) x its steps and count the newly broken samples
    pgd = next((p for p in ev.plan if p.name == "pgd"), None)
    pgd_set = ev.last_sets.get("pgd@surrogate")
    if pgd is not None and pgd_set is not None:
        from edgempir.attacks.pgd import sign_gradient_ascent

        k = int(pgd.params["steps"])
        extra = k * (int(settings["more_steps_factor"]) - 1)
        step = (float(pgd.params["step_size"]) if pgd.params.get("step_size") is not None
                else float(pgd.params.get("rel_step", 0.25)) * eps)
        start = torch.from_numpy(pgd_set["x_adv"][:n])

        def craft(xb, yb, sl):
            with frozen(ev.surrogate):
                return sign_gradient_ascent(ev.surrogate, xb, yb, eps, step, extra,
                                            start=start[sl].clone())

        ok_long = _attacked_ok(ev, craft, xs, ys, f"check more-steps eps={eps:g} pgd+{extra}",
                               {"eps": eps, "extra": extra, "step": step,
                                "start": hashlib.sha256(start.numpy().tobytes()).hexdigest()})
        ok_short = pgd_set["ok"][0][:n]
        newly = int((ok_short & ~ok_long).sum())
        drop = newly / max(n, 1)
        margin = max(MORE_STEPS_MARGIN, 1.5 / max(n, 1))
        checks.append(_check(
            "more-steps-lower", drop <= margin,
            f"continuing the configured PGD-{k} x{pgd.params['restarts']} for {extra} more "
            f"steps broke the ensemble (vote) on {newly} more of {n} images "
            f"({100 * drop:.2f} points; {100 * ok_short.mean():.2f}% -> "
            f"{100 * (ok_short & ok_long).mean():.2f}%); allowed {100 * margin:.1f} points",
            drop))
    else:
        checks.append(_check("more-steps-lower", None,
                             "not run: pgd is not part of this evaluation"))
    return checks


def _attacked_ok(ev: Evaluator, craft, xs, ys, desc: str, what: dict) -> np.ndarray:
    """Per-sample correctness of the ensemble's real decision on ``craft``'s examples
    (``craft(x_batch, y_batch, slice)``); the examples are kept for resume."""
    torch = ev.torch
    x_adv = _crafted(ev, craft, xs, ys, desc, what)
    with torch.no_grad():
        pred = torch.cat([ev.ens(torch.from_numpy(x_adv[s:s + ev.batch_size])).argmax(1)
                          for s in range(0, len(x_adv), ev.batch_size)])
    return (pred == ys).numpy()


def _crafted(ev: Evaluator, craft, xs, ys, desc: str, what: dict) -> np.ndarray:
    """``craft``'s examples for ``xs`` in batches, kept under partial/checks for resume."""
    torch = ev.torch
    fingerprint = _digest({"run": ev.run_fingerprint, "subset": ev.subset_digest, "n": len(ys),
                           "batch": ev.batch_size, "seed": ev.seed, "what": what})
    path = ev.partial_dir / "checks" / f"{_digest(desc)[:16]}.npz"
    cached = _load_partial(path, fingerprint, tuple(xs.shape))
    if cached is None:
        t0 = time.perf_counter()
        bar = _bar(len(ys), f"{ev.config.protocol} {desc}", ev.progress)
        out = []
        for s in range(0, len(ys), ev.batch_size):
            sl = slice(s, s + ev.batch_size)
            out.append(craft(xs[sl], ys[sl], sl).detach())
            bar.update(len(out[-1]))
        bar.close()
        x_adv = torch.cat(out).numpy()
        _save_partial(path, fingerprint, x_adv, time.perf_counter() - t0)
    else:
        x_adv = cached[0]
    return x_adv


# ------------------------------------------------------------------ reject policies
def reject_report(ev: Evaluator, eps: float, clean: dict, settings: dict) -> dict:
    """The reject policies of ``edgempir.reject`` on the evaluator's images at ``eps``: the
    aimed attacks (unanimous: every member to one wrong class; fp32 threshold: confident
    wrong answers of the reference member), pooled with every L-inf set of the protocol."""
    from edgempir import reject
    from edgempir.attacks import make_attack

    torch = ev.torch
    y = ev.y.numpy()
    sets = [{"preds": s["preds"], "ref_conf": s["ref_conf"]} for s in ev.last_sets.values()
            if s["bounded"]]
    steps, targets = int(settings["steps"]), int(settings["targets"])
    # unanimous: only where no example so far is a unanimous wrong answer (a cascade)
    done = np.any([reject.accepted_unanimous(s["preds"][1:]) & (s["preds"][1] != y)
                   for s in [clean, *sets]], axis=0)
    aimed = {"unanimous": (make_attack("vote-pgd", eps=eps, seed=ev.seed, steps=steps,
                                       targets=targets, coalitions="all"), ev.ens, ~done),
             "fp32-threshold": (make_attack("confident-pgd", eps=eps, seed=ev.seed,
                                            steps=steps, targets=targets),
                                ev.ens.members[ev.ens.reference], np.ones(len(y), bool))}
    for policy, (attack, model, mask) in aimed.items():
        rows = torch.from_numpy(np.flatnonzero(mask))
        x_adv = ev.x.clone()
        if len(rows):
            def craft(xb, yb, sl, attack=attack, model=model):
                return attack(model, xb, yb)

            x_adv[rows] = torch.from_numpy(_crafted(
                ev, craft, ev.x[rows], ev.y[rows], f"reject {policy} eps={eps:g}",
                {**attack.describe(), "rows": hashlib.sha256(
                    np.flatnonzero(mask).tobytes()).hexdigest()}))
        preds, _, ref_conf = ev.score(x_adv)
        sets.append({"preds": preds, "ref_conf": ref_conf})
    figures = reject.policy_figures(y, clean, sets, ev.ens.reference)
    return {"eps": eps, "n": len(y), "protocol": ev.config.protocol,
            "tuned": "fp32 threshold tuned on these clean images to the clean rejection "
                     "rate of unanimous",
            "aimed_attack_params": {"steps": steps, "targets": targets}, **figures}


# ------------------------------------------------------------------ entry point
def versions() -> dict:
    return provenance.versions("torch", "brevitas", "numpy", "torchattacks")


@dataclass
class EvalResult:
    reports: dict[str, dict]      # protocol -> report
    files: list[Path]


def evaluate(run_dir: str | os.PathLike, protocols: list[str] | tuple[str, ...] = ("adaptive",),
             config: str = "standard", attacks: list[str] | None = None,
             eps: str | list[float] | None = None, n: int | None = None, seed: int = 0,
             batch_size: int = 250, data_dir: str | None = None, force: bool = False,
             progress: bool = True, echo: Callable[[str], None] = lambda s: None,
             overrides: dict[str, dict] | None = None, threads: int | None = 1,
             allow_other_data: bool = False) -> EvalResult:
    """Evaluate a run directory; write reports, adversarial sets and the plot under eval/.

    ``overrides`` (Python API only, e.g. ``{"pgd": {"steps": 5}}``) changes attack
    parameters; the report records them and its ``config_label`` says so.

    ``allow_other_data``: evaluate on test data whose fingerprint differs from the one the
    run recorded (refused otherwise); the report's ``data`` says which data was used.

    ``threads``: torch intra-op threads (default 1). Attack batches are small and Brevitas
    adds Python overhead per layer, so a second thread gains little on an idle 2-core
    machine, and on a busy one OpenMP's spinning threads made PGD 3-20x slower (measured).
    """
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _evaluate(run_dir, protocols, config, attacks, eps, n, seed, batch_size,
                         data_dir, force, progress, echo, overrides, allow_other_data)
    finally:
        torch.set_num_threads(previous_threads)


def _evaluate(run_dir, protocols, config, attacks, eps, n, seed, batch_size, data_dir, force,
              progress, echo, overrides, allow_other_data=False) -> EvalResult:
    import torch

    from edgempir.calib import write_set
    from edgempir.data import load_dataset, to_float
    from edgempir.errors import EdgempirError
    from edgempir.fsutil import atomic_write_json, atomic_write_text, sha256_file
    from edgempir.model_card import model_card
    from edgempir.reject import reject_table, risk_coverage_plot
    from edgempir.report import accuracy_plot, eval_tables
    from edgempir.rundir import load_run, write_model_card
    from edgempir.validate import read_json

    run = Path(run_dir)
    # validate everything cheap before loading anything heavy
    configs = [get_config(p, config) for p in protocols]
    plans = select_attacks(configs, attacks)
    if overrides:
        import dataclasses

        plans = [tuple(dataclasses.replace(p, params={**p.params, **overrides[p.name]})
                       if p.name in overrides else p for p in plan) for plan in plans]
    if batch_size < 1:
        raise AttackError(f"--batch-size {batch_size}: must be at least 1")
    ens = load_run(run)
    manifest = ens.manifest
    dataset = manifest["dataset"]["name"]
    given_eps = eps
    ds = load_dataset(dataset, data_dir)
    if tuple(ds.input_shape) != tuple(manifest["dataset"]["input_shape"]):
        from edgempir.errors import DataError

        raise DataError(f"{dataset} at {ds.source} has images {list(ds.input_shape)} but the "
                        f"run was trained on {manifest['dataset']['input_shape']}; point "
                        "--data-dir at the data the run was trained on")
    data_record = _data_used(manifest, ds, allow_other_data, echo)
    run_fingerprint = _digest({"manifest": sha256_file(run / "manifest.json"),
                               "members": [sha256_file(run / m["file"])
                                           for m in manifest["members"]]})
    eval_dir = run / "eval"
    files: list[Path] = []
    reports: dict[str, dict] = {}
    for cfg, plan in zip(configs, plans):
        t0 = time.perf_counter()
        eps_list = given_eps if isinstance(given_eps, list) else \
            parse_eps_list(given_eps, dataset, cfg.protocol)
        eps_list = [check_eps(e) for e in eps_list]
        n_images = int(n if n is not None else (cfg.n or len(ds.y_test)))
        indices = choose_subset(len(ds.y_test), n_images, seed)
        x = torch.from_numpy(to_float(ds.x_test[indices]))
        y = torch.from_numpy(ds.y_test[indices].astype(np.int64))
        partial_dir = eval_dir / "partial" / f"{cfg.protocol}-{cfg.name}"
        if force and partial_dir.exists():
            shutil.rmtree(partial_dir)
        ev = Evaluator(ens, x, y, indices, cfg, plan, seed=seed, batch_size=batch_size,
                       partial_dir=partial_dir, run_fingerprint=run_fingerprint,
                       progress=progress, echo=echo)
        clean_pred, _, clean_conf = ev.score(x)
        unbounded: dict = {}
        reject = None
        results = []
        examples = None
        checks: list[dict] = []
        for k, e in enumerate(eps_list):
            res = ev.evaluate_eps(e, clean_pred, keep_examples=(k == 0),
                                  unbounded_cache=unbounded)
            if k == 0:
                examples = res.pop("_examples")
                if cfg.checks:
                    checks = masking_checks(ev, e, res, cfg.checks)
                # majority's aimed attacker is vote-pgd: no reject report without it
                if cfg.reject and any(p.name == "vote-pgd" for p in plan):
                    # overrides["reject"] (Python API) shortens the aimed attacks like others
                    settings = {**cfg.reject, **(overrides or {}).get("reject", {})}
                    reject = reject_report(ev, e, {"preds": clean_pred, "ref_conf": clean_conf},
                                           settings)
            results.append(res)
        disagreement = _slow_path_measurement(ens, x, eps_list, cfg, seed, batch_size, echo)
        report = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "protocol": cfg.protocol, "config": cfg.name,
            "config_label": _run_label(cfg, plan, len(indices), overrides, len(ds.y_test)),
            "overrides": overrides or {},
            "run": {"path": str(run), "dataset": dataset, "arch": manifest["arch"],
                    "fingerprint": run_fingerprint},
            "data": data_record,
            "norm": "Linf", "eps": eps_list, "n_examples": len(indices), "seed": seed,
            "subset": {"split": "test", "n_test": len(ds.y_test),
                       "indices": [int(i) for i in indices],
                       "sha256": ev.subset_digest, "how": SUBSET_HOW},
            "combiner": ens.combiner, "reference_member": ens.reference,
            "members": [{"index": i, **spec.to_json()} for i, spec in enumerate(ens.specs)],
            "attacks": _attack_params(plan, ens),
            "worst_case_over": ev.worst_case_over(),
            "results": results,
            "masking_checks": checks,
            **({"reject": reject} if reject else {}),
            "disagreement": disagreement,
            "adversarial_examples": f"adv-{cfg.protocol}.npz",
            "versions": versions(),
            "seconds": round(time.perf_counter() - t0, 2),
            "attack_seconds": round(ev.attack_seconds, 2),
        }
        report_path = eval_dir / f"{cfg.protocol}-{cfg.name}.json"
        atomic_write_json(report_path, report)
        files.append(write_model_card(run, cfg.protocol, cfg.name,
                                      model_card(report, manifest, run.name,
                                                 reports.get("paper"))))
        if reject:
            plot = eval_dir / f"risk-coverage-{cfg.name}.png"
            risk_coverage_plot(report, plot)
            files.append(plot)
        adv_path = eval_dir / f"adv-{cfg.protocol}.npz"
        write_set(adv_path, examples, y.numpy(), index=indices.astype(np.int64),
                  eps=np.float32(eps_list[0]), protocol=np.array(cfg.protocol),
                  config=np.array(cfg.name))
        files += [report_path, adv_path]
        reports[cfg.protocol] = report
    # the side-by-side table and the plot use every report of this config on disk
    all_reports = dict(reports)
    for proto in PROTOCOLS:
        if proto not in all_reports:
            other = eval_dir / f"{proto}-{config}.json"
            if other.is_file():
                try:
                    all_reports[proto] = read_json(other)
                except (OSError, EdgempirError):  # damaged: this table goes without it
                    pass
    table = eval_tables(all_reports, manifest)
    table += "".join(f"\n\n{reject_table(r)}" for r in all_reports.values() if "reject" in r)
    table_path = eval_dir / f"table-{config}.txt"
    atomic_write_text(table_path, table + "\n")
    plot_path = eval_dir / "acc-vs-eps.png"
    accuracy_plot(all_reports, plot_path)
    files += [table_path, plot_path]
    return EvalResult(reports=reports, files=files)


def _slow_path_measurement(ens, x, eps_list, cfg: Config, seed: int, batch_size: int,
                           echo: Callable[[str], None]) -> dict | None:
    """Issue 18: the early-exit vote's slow-path share under attack (adaptive protocol
    only; edgempir/attacks/disagree.py)."""
    from edgempir.attacks.disagree import disagreement_report

    if cfg.protocol != "adaptive" or not eps_list:
        return None
    out = disagreement_report(ens, x, eps_list[0], cfg.name, cfg.protocol, seed, batch_size)
    if out is not None:
        echo(f"{out['description']}: {100 * out['clean_slow_path']:.1f}% clean, "
             f"{100 * out['attacked_slow_path']:.1f}% under attack")
    return out


def _data_used(manifest: dict, ds, allow_other: bool, echo) -> dict:
    """The test data's record for the report; other data than the run's is refused unless
    allowed (rundir.data_used: the check shared with export)."""
    from edgempir.rundir import data_used

    return data_used(manifest, ds, ("test",), allow_other, echo)


def _run_label(cfg: Config, plan, n: int, overrides, n_test: int) -> str:
    """The configuration's label plus whatever this run changed (n, attacks, parameters)."""
    changes = []
    if n != (cfg.n or n_test):
        changes.append(f"n={n} instead of {cfg.n or f'the whole test set ({n_test})'}")
    if tuple(p.name for p in plan) != tuple(p.name for p in cfg.plan):
        changes.append(f"attacks restricted to {', '.join(p.name for p in plan)}")
    if overrides:
        changes.append(f"parameter overrides {overrides}")
    return cfg.label + (f"; this run: {'; '.join(changes)}" if changes else "")


def _attack_params(plan, ens) -> dict:
    from edgempir.attacks import make_attack

    out = {}
    for p in plan:
        a = make_attack(p.attack, eps=0.1 if p.bounded else None, **p.params)
        desc = a.describe()
        for k in ("eps", "seed", "name"):
            desc.pop(k, None)
        out[p.name] = {"attack": p.attack, "params": desc, "mode": "cascade" if p.cascade
                       else "all", "judge": p.judge, "gradients": _gradients_label(p, ens),
                       "aimed_at_members": p.members}
        if p.member_params:
            out[p.name]["member_params"] = dict(p.member_params)
    return out

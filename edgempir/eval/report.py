"""Assembly of eval's JSON report (schema ``edgempir.eval`` v1,
docs/EVAL.md#json-report-schema-edgempireval-version-1): the figures of one eps, the
description of every attack, and the whole report of one protocol.
"""
from __future__ import annotations

import numpy as np

from edgempir import provenance
from edgempir.eval.config import SCHEMA, SCHEMA_VERSION, SUBSET_HOW, Config, Planned


def versions() -> dict:
    return provenance.versions("torch", "brevitas", "numpy", "torchattacks")


def fig(values) -> dict:
    """[ensemble, member 0, ...] as the report's ``{"ensemble": ..., "members": [...]}``."""
    values = [None if v is None or np.isnan(v) else float(v) for v in values]
    return {"ensemble": values[0], "members": values[1:]}


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------- one eps
def eps_result(ev, eps: float, clean_ok: np.ndarray, worst) -> dict:
    """The report's entry for one eps, from the evaluator ``ev`` and the
    :class:`~edgempir.eval.worstcase.WorstCase` that ran its plan."""
    result = {"eps": eps, "clean": fig(clean_ok.mean(axis=1)), "attacks": {},
              "worst_case": fig(worst.accuracy())}
    for p in ev.plan:
        result["attacks"][p.name] = _attack_entry(p, worst.figures.get(p.name, {}), eps, ev)
    if ev.config.protocol == "adaptive":
        result["attacks"].update(_transfer_entries(ev, worst.sets, eps, len(clean_ok[0])))
    if ev.config.protocol == "paper":
        result["mean_of_attacks"] = _mean_of_attacks(result["attacks"], ev.n_members)
    result["worst_case"]["over"] = ev.worst_case_over()
    return result


def _attack_entry(p: Planned, rec: dict, eps: float, ev) -> dict:
    entry = {"ensemble": rec.get("ensemble"),
             "members": [rec.get(f"m{i}") for i in range(ev.n_members)],
             "mode": "cascade" if p.cascade else "all",
             "norm": "Linf" if p.bounded else "L2",
             "eps": eps if p.bounded else None,
             "gradients": gradients_label(p, ev.ens),
             "n_attacked": rec.get("_n_attacked", {})}
    if not p.bounded:
        entry["in_worst_case"] = False
    return entry


def _transfer_entries(ev, sets: dict, eps: float, n: int) -> dict:
    """Protocol adaptive's ``transfer-m<i>`` rows: PGD aimed at member i alone, scored on
    the ensemble and on every member."""
    out = {}
    for i in range(ev.n_members):
        key = f"pgd@m{i}"
        if key in sets:
            ok = sets[key]["ok"]
            out[f"transfer-m{i}"] = {
                "ensemble": float(ok[0].mean()),
                "members": [float(v) for v in ok[1:].mean(axis=1)],
                "mode": "all", "norm": "Linf", "eps": eps,
                "gradients": f"member {i} ({ev.ens.specs[i]}) alone, PGD; "
                             "scored on the ensemble (transfer)",
                "n_attacked": {"ensemble": n}}
    return out


def _mean_of_attacks(attacks: dict, n_members: int) -> dict:
    """The paper's "mean of attacks" column: every attack, CW-L2 included."""
    names = list(attacks)
    return {"ensemble": _mean([attacks[n]["ensemble"] for n in names]),
            "members": [_mean([attacks[n]["members"][i] for n in names])
                        for i in range(n_members)],
            "over": names}


# ---------------------------------------------------------------- labels
def gradients_label(p: Planned, ens) -> str:
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


def run_label(cfg: Config, plan, n: int, overrides, n_test: int) -> str:
    """The configuration's label plus whatever this run changed (n, attacks, parameters)."""
    changes = []
    if n != (cfg.n or n_test):
        changes.append(f"n={n} instead of {cfg.n or f'the whole test set ({n_test})'}")
    if tuple(p.name for p in plan) != tuple(p.name for p in cfg.plan):
        changes.append(f"attacks restricted to {', '.join(p.name for p in plan)}")
    if overrides:
        changes.append(f"parameter overrides {overrides}")
    return cfg.label + (f"; this run: {'; '.join(changes)}" if changes else "")


def attack_params(plan, ens) -> dict:
    """The report's ``attacks``: each attack's parameters, mode, judge and gradients."""
    from edgempir.attacks import make_attack

    out = {}
    for p in plan:
        a = make_attack(p.attack, eps=0.1 if p.bounded else None, **p.params)
        desc = a.describe()
        for k in ("eps", "seed", "name"):
            desc.pop(k, None)
        out[p.name] = {"attack": p.attack, "params": desc, "mode": "cascade" if p.cascade
                       else "all", "judge": p.judge, "gradients": gradients_label(p, ens),
                       "aimed_at_members": p.members}
        if p.member_params:
            out[p.name]["member_params"] = dict(p.member_params)
    return out


# ---------------------------------------------------------------- one protocol
def build_report(*, cfg: Config, plan, ev, run, data_record: dict, eps_list: list[float],
                 n_test: int, seed: int, overrides: dict | None, results: list[dict],
                 checks: list[dict], reject: dict | None, disagreement: dict | None,
                 seconds: float, rank_wait_seconds: list[float]) -> dict:
    """The whole report of one protocol; ``run`` is the loaded run (``.path``, ``.ens``,
    ``.dataset``, ``.fingerprint``)."""
    ens, manifest = run.ens, run.ens.manifest
    indices = ev.indices
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "protocol": cfg.protocol, "config": cfg.name,
        "config_label": run_label(cfg, plan, len(indices), overrides, n_test),
        "overrides": overrides or {},
        "run": {"path": str(run.path), "dataset": run.dataset, "arch": manifest["arch"],
                "fingerprint": run.fingerprint},
        "data": data_record,
        "norm": "Linf", "eps": eps_list, "n_examples": len(indices), "seed": seed,
        "subset": {"split": "test", "n_test": n_test,
                   "indices": [int(i) for i in indices],
                   "sha256": ev.subset_digest, "how": SUBSET_HOW},
        "combiner": ens.combiner, "reference_member": ens.reference,
        "members": [{"index": i, **spec.to_json()} for i, spec in enumerate(ens.specs)],
        "attacks": attack_params(plan, ens),
        "worst_case_over": ev.worst_case_over(),
        "results": results,
        "masking_checks": checks,
        **({"reject": reject} if reject else {}),
        "disagreement": disagreement,
        "adversarial_examples": f"adv-{cfg.protocol}.npz",
        # ranks the evaluation was shared over (torchrun); per-image results do not
        # depend on it, the seconds do
        "world_size": ev.shard.world,
        "rank_wait_seconds": rank_wait_seconds,
        "versions": versions(),
        "seconds": round(seconds, 2),
        "attack_seconds": round(ev.attack_seconds, 2),
    }

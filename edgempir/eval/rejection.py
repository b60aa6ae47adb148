"""The reject policies of ``edgempir.reject`` under attackers aimed at them
(docs/EVAL.md#reject-option-protocol-adaptive)."""
from __future__ import annotations

import numpy as np

from edgempir.eval.store import array_digest, crafted


def reject_report(ev, eps: float, clean: dict, settings: dict) -> dict:
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
            def craft(xb, yb, idx, ids, attack=attack, model=model):
                return attack(model, xb, yb, ids=ids)

            x_adv[rows] = torch.from_numpy(crafted(
                ev, craft, ev.x[rows], ev.y[rows], ev.indices[rows.numpy()],
                f"reject {policy} eps={eps:g}",
                {**attack.describe(), "rows": array_digest(np.flatnonzero(mask))}))
        preds, _, ref_conf = ev.score(x_adv, rows=rows.numpy())
        sets.append({"preds": preds, "ref_conf": ref_conf})
    figures = reject.policy_figures(y, clean, sets, ev.ens.reference)
    return {"eps": eps, "n": len(y), "protocol": ev.config.protocol,
            "tuned": "fp32 threshold tuned on these clean images to the clean rejection "
                     "rate of unanimous",
            "aimed_attack_params": {"steps": steps, "targets": targets}, **figures}


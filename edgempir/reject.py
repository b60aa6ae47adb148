"""Reject policies, measured honestly (issue 14; docs/EVAL.md, "Reject option").

A device rarely needs a class for every frame; it needs to know when not to trust one. The
policies, each scored on the same images under protocol adaptive:

- ``majority``: today's vote; never rejects.
- ``unanimous``: the vote's class, accepted only when every member votes it.
- ``fp32-threshold``: the baseline to beat: the fp32 (reference) member alone, accepted when
  its top softmax probability reaches a threshold tuned on the same clean images to the
  clean rejection rate of ``unanimous`` (the comparison is at equal false-alarm cost).

Per policy: clean accuracy on accepted images, clean rejection rate, and the
**wrong-and-accepted** rate under an attacker aimed at the policy: per sample, whether any
example found for it (the clean input, every L-inf set of the adaptive protocol, the
policy's own aimed attack) is answered wrong and accepted. Aimed attackers: for
``majority`` the adaptive protocol itself (the vote attacks included); for ``unanimous``
``vote-pgd`` with every member driven to one wrong class; for the threshold
``confident-pgd`` on the fp32 member (targeted, maximising the wrong answer's confidence).

Torch-free apart from the aimed attacks (run through the evaluator).
"""
from __future__ import annotations

import numpy as np

EVAL_POLICIES = ("majority", "unanimous", "fp32-threshold")
ATTACKERS = {
    "majority": "protocol adaptive itself (surrogate PGD, vote-PGD aimed at the coalitions "
                "that decide the vote, APGD-CE, Square, transfer): any wrong vote counts",
    "unanimous": "vote-pgd with coalitions=all (every member pushed to one of the likeliest "
                 "wrong classes), plus every example of protocol adaptive",
    "fp32-threshold": "confident-pgd on the fp32 member (targeted cross-entropy to the "
                      "likeliest wrong classes, keeping the most confident wrong answer), "
                      "plus every example of protocol adaptive",
}
CURVE_POINTS = 101


def accepted_unanimous(member_preds: np.ndarray) -> np.ndarray:
    """[M, n] member argmaxes -> [n] bool: every member votes the same class."""
    return (member_preds == member_preds[:1]).all(axis=0)


def tune_threshold(conf: np.ndarray, rejection_rate: float) -> float:
    """The threshold (accept ``conf >= t``) that rejects ``round(rate * n)`` of ``conf``."""
    k = round(rejection_rate * len(conf))
    if k <= 0:
        return 0.0
    s = np.sort(conf)
    if k >= len(s):
        return float(np.nextafter(s[-1], np.inf))
    return float((s[k - 1] + s[k]) / 2) if s[k] > s[k - 1] else float(s[k])


def _rates(correct: np.ndarray, accept: np.ndarray) -> dict:
    n_acc = int(accept.sum())
    return {"clean_accuracy_on_accepted": float(correct[accept].mean()) if n_acc else None,
            "clean_rejection_rate": float(1 - accept.mean()), "clean_accepted": n_acc}


def policy_figures(y: np.ndarray, clean: dict, sets: list[dict], reference: int) -> dict:
    """``clean`` / each of ``sets``: {"preds": [1 + M, n] (vote, then member argmaxes),
    "ref_conf": [n] top softmax probability of the reference member}. The aimed sets are
    among ``sets``. Returns the per-policy figures and the threshold's curve."""
    ref = 1 + reference
    vote_ok = clean["preds"][0] == y
    unan = accepted_unanimous(clean["preds"][1:])
    tau = tune_threshold(clean["ref_conf"], float(1 - unan.mean()))
    ref_ok = clean["preds"][ref] == y
    pool = [clean, *sets]
    # per sample, over the pool: wrong vote; wrong unanimous vote; most confident wrong fp32
    wrong_vote = np.any([s["preds"][0] != y for s in pool], axis=0)
    wrong_unan = np.any([accepted_unanimous(s["preds"][1:]) & (s["preds"][1] != y)
                         for s in pool], axis=0)
    wrong_conf = np.max([np.where(s["preds"][ref] != y, s["ref_conf"], -1.0) for s in pool],
                        axis=0)
    out = {
        "majority": {**_rates(vote_ok, np.ones_like(vote_ok)),
                     "wrong_and_accepted": float(wrong_vote.mean())},
        "unanimous": {**_rates(vote_ok, unan), "wrong_and_accepted": float(wrong_unan.mean())},
        "fp32-threshold": {**_rates(ref_ok, clean["ref_conf"] >= tau),
                           "wrong_and_accepted": float((wrong_conf >= tau).mean()),
                           "threshold": tau},
    }
    for name, fig in out.items():
        fig["attacker"] = ATTACKERS[name]
    taus = np.unique(np.quantile(clean["ref_conf"], np.linspace(0, 1, CURVE_POINTS)))
    curve = {"threshold": [], "coverage": [], "clean_risk": [], "wrong_and_accepted": []}
    for t in [0.0, *taus.tolist()]:
        acc = clean["ref_conf"] >= t
        curve["threshold"].append(float(t))
        curve["coverage"].append(float(acc.mean()))
        curve["clean_risk"].append(float((~ref_ok[acc]).mean()) if acc.any() else None)
        curve["wrong_and_accepted"].append(float((wrong_conf >= t).mean()))
    return {"policies": out, "fp32_threshold_curve": curve}


def reject_table(rep: dict) -> str:
    from edgempir.report import format_table, pct

    r = rep["reject"]
    rows = [[name, pct(f["clean_accuracy_on_accepted"]), pct(f["clean_rejection_rate"]),
             pct(f["wrong_and_accepted"])] for name, f in r["policies"].items()]
    title = (f"Reject policies, protocol {rep['protocol']} ({rep['config']}), eps {r['eps']:g}, "
             f"n {r['n']} (fp32 threshold {r['policies']['fp32-threshold']['threshold']:.4f}, "
             "tuned to unanimous's clean rejection rate):")
    return format_table(["policy", "clean acc. on accepted", "clean rejection",
                         "wrong & accepted under attack"], rows, title)


def risk_coverage_plot(rep: dict, path) -> None:
    """PNG: clean risk vs coverage, and wrong-and-accepted under attack vs clean coverage;
    the threshold as a curve, majority and unanimous as points."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgempir.fsutil import atomic_write_bytes

    r = rep["reject"]
    curve, pol = r["fp32_threshold_curve"], r["policies"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    cov = [100 * c for c in curve["coverage"]]
    panels = [("clean_risk", "clean error on accepted (%)", None),
              ("wrong_and_accepted", "wrong & accepted under attack (%)", None)]
    for ax, (key, label, _) in zip(axes, panels):
        vals = [float("nan") if v is None else 100 * v for v in curve[key]]
        ax.plot(cov, vals, "-", color="gray", label="fp32 alone, max-softmax threshold")
        for name, marker in (("majority", "o"), ("unanimous", "s"), ("fp32-threshold", "^")):
            f = pol[name]
            acc = f["clean_accuracy_on_accepted"]
            y = (100 * (1 - acc) if acc is not None else float("nan")) \
                if key == "clean_risk" else 100 * f["wrong_and_accepted"]
            ax.plot(100 * (1 - f["clean_rejection_rate"]), y, marker, markersize=8,
                    label=name if name != "fp32-threshold" else "fp32 threshold at "
                    "unanimous's rejection rate")
        ax.set_xlabel("clean coverage (% of clean images accepted)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Risk vs coverage, protocol {rep['protocol']} ({rep['config']}), "
                 f"eps {r['eps']:g} (L-inf), n {r['n']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

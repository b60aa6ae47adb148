"""A model card beside each eval report, in RobustBench's model-info JSON fields.

RobustBench (robustbench/model_info/<dataset>/<threat>/<name>.json) describes each model
with ``link, name, authors, additional_data, number_forward_passes, dataset, venue,
architecture, eps, clean_acc, reported, autoattack_acc`` (accuracies as percent strings,
two decimals); we add its leaderboard's ``threat_model`` and what its figures cannot say
for an ensemble: which surrogate the attacks used, the protocol and configuration, n.
Protocol adaptive's card: ``autoattack_acc`` is its worst case (AutoAttack's components
run in full only in ``standard``; ``config_label`` says what ran) and ``reported`` the
paper protocol's "mean of attacks" for the ensemble when that report is at hand (what the
paper's own evaluation would report). Protocol paper's card: ``reported`` is that figure
and ``autoattack_acc`` null (the paper's attacks are not an adaptive evaluation).
Torch-free.
"""
from __future__ import annotations


def _pct(value) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def _paper_mean(report: dict | None):
    if not report or report.get("protocol") != "paper":
        return None
    return report["results"][0].get("mean_of_attacks", {}).get("ensemble")


def model_card(report: dict, manifest: dict, run_name: str,
               paper_report: dict | None = None) -> dict:
    res = report["results"][0]
    adaptive = report["protocol"] == "adaptive"
    members = [m["spec"] for m in report["members"]]
    attacks = report.get("attacks", {})
    surrogates = sorted({a["gradients"] for a in attacks.values()})
    eps = res["eps"]
    return {
        "link": "",
        "name": f"EMPIR ensemble {'+'.join(members)} ({run_name})",
        "authors": "trained with edgempir (EMPIR: Sen, Ravindran, Raghunathan, ICLR 2020)",
        "additional_data": False,
        # one forward of every member per prediction (the vote needs all of them)
        "number_forward_passes": len(members),
        "dataset": report["run"]["dataset"],
        "venue": "unpublished (local run)",
        "architecture": f"{manifest['arch']} CNN x{len(members)} ({', '.join(members)}), "
                        f"{report['combiner']} with reference member "
                        f"{report['reference_member']}",
        "eps": f"{eps:g}" if eps is not None else None,
        "clean_acc": _pct(res["clean"]["ensemble"]),
        "reported": _pct(_paper_mean(paper_report if adaptive else report)),
        "autoattack_acc": _pct(res["worst_case"]["ensemble"]) if adaptive else None,
        "threat_model": report.get("norm", "Linf"),
        "surrogate": surrogates,
        "protocol": report["protocol"],
        "config_label": report["config_label"],
        "n_examples": report["n_examples"],
        "footnote": f"{report['protocol']} protocol, {report['config_label']}; "
                    + (f"autoattack_acc is the per-sample worst case over "
                       f"{res['worst_case'].get('over', 'every attack')}, scored with the vote"
                       if adaptive else "no adaptive figure: see the adaptive report's card")
                    + "; reported: protocol paper's mean of attacks for the ensemble (the "
                      "paper's own summary, CW-L2 included)",
        "report": f"{report['protocol']}-{report['config']}.json",
    }

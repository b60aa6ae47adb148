"""A model card beside each eval report, in RobustBench's model-info JSON fields.

RobustBench (robustbench/model_info/<dataset>/<threat>/<name>.json) describes each model
with ``link, name, authors, additional_data, number_forward_passes, dataset, venue,
architecture, eps, clean_acc, reported, autoattack_acc`` (accuracies as percent strings,
two decimals); we add its leaderboard's ``threat_model`` and what its figures cannot say
for an ensemble: which surrogate the attacks used, the protocol and configuration, n.
``autoattack_acc`` is this report's worst case (protocol adaptive includes AutoAttack's
components only in ``standard``; the card says which ran). Torch-free.
"""
from __future__ import annotations


def _pct(value) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def model_card(report: dict, manifest: dict, run_name: str) -> dict:
    res = report["results"][0]
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
        "reported": None,
        "autoattack_acc": _pct(res["worst_case"]["ensemble"]),
        "threat_model": report.get("norm", "Linf"),
        "surrogate": surrogates,
        "protocol": report["protocol"],
        "config_label": report["config_label"],
        "n_examples": report["n_examples"],
        "footnote": f"{report['protocol']} protocol, {report['config_label']}; "
                    f"autoattack_acc is the per-sample worst case over "
                    f"{res['worst_case'].get('over', 'every attack')}, scored with the vote",
        "report": f"{report['protocol']}-{report['config']}.json",
    }

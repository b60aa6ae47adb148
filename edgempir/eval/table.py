"""eval's side-by-side text tables and its accuracy-vs-eps plot
(docs/EVAL.md#reading-the-table).

Every robustness figure printed here names its protocol (and configuration): a number
without the attack that produced it is not something a safety case can cite. The table
layout itself is :mod:`edgempir.tables`, the PNG pieces :mod:`edgempir.plotting`.
"""
from __future__ import annotations

from edgempir.tables import format_table, pct

#: the order of the protocols in tables and plots
ORDER = ("paper", "adaptive")


def _model_names(report: dict) -> list[str]:
    names = [f"ensemble ({report['combiner']})"]
    names += [f"member {m['index']} {m['spec']}" for m in report["members"]]
    return names


def _values(fig: dict | None, n_members: int) -> list:
    if not fig:
        return [None] * (1 + n_members)
    return [fig.get("ensemble")] + list(fig.get("members") or [None] * n_members)


def eval_tables(reports: dict[str, dict], manifest: dict | None = None) -> str:
    """Side-by-side tables for the reports of one configuration (``{protocol: report}``).

    1. summary at the first eps: one row per model, clean and each protocol's worst case
       (and the paper's mean of attacks), protocols side by side;
    2. every attack, one row per (protocol, attack), one column per model;
    3. with several eps, worst case per eps;
    4. the masking checks of each protocol.
    """
    order = [p for p in ORDER if p in reports]
    if not order:
        return "no evaluation reports"
    first = reports[order[0]]
    all_eps = {reports[p]["results"][0]["eps"] for p in order}
    eps_text = f"eps {first['results'][0]['eps']:.4g}" if len(all_eps) == 1 \
        else "eps per protocol"
    blocks = [_summary_table(reports, order, manifest, eps_text),
              _attack_table(reports, order, eps_text)]
    if any(len(reports[p]["results"]) > 1 for p in order):
        blocks.append(_curve_table(reports, order))
    blocks += [_checks_block(p, reports[p]) for p in order if reports[p].get("masking_checks")]
    return "\n\n".join(blocks)


def _summary_table(reports: dict, order: list[str], manifest: dict | None,
                   eps_text: str) -> str:
    # the protocols may differ in n and eps (protocol paper: the reference's eps, the whole
    # test set), so every column says its own
    first = reports[order[0]]
    n_members = len(first["members"])
    models = _model_names(first)
    ds = (manifest or {}).get("dataset", {}).get("name") or first.get("run", {}).get("dataset")
    headers = ["model", f"clean (n={first['n_examples']})"]
    columns = []
    for proto in order:
        rep = reports[proto]
        res = rep["results"][0]
        tag = f"{proto} ({rep['config']}, n={rep['n_examples']}, eps={res['eps']:.4g})"
        columns.append((f"{tag}: worst case", _values(res["worst_case"], n_members)))
        if "mean_of_attacks" in res:
            columns.append((f"{proto}: mean of attacks", _values(res["mean_of_attacks"],
                                                                  n_members)))
    headers += [c[0] for c in columns]
    clean = _values(first["results"][0]["clean"], n_members)
    rows = [[models[i], pct(clean[i])] + [pct(c[1][i]) for c in columns]
            for i in range(len(models))]
    labels = "; ".join(f"{p}: {reports[p]['config_label']}" for p in order)
    return format_table(
        headers, rows,
        title=f"Robust accuracy on {ds}, {eps_text} (L-inf), protocols side by side "
              f"[{labels}]. Worst case = per sample over the protocol's attacks; headline: "
              f"protocol adaptive.")


def _attack_table(reports: dict, order: list[str], eps_text: str) -> str:
    first = reports[order[0]]
    n_members = len(first["members"])
    rows = []
    for proto in order:
        rep = reports[proto]
        res = rep["results"][0]
        for name, a in res["attacks"].items():
            what = name
            if a.get("norm") == "L2":
                what += " (L2, unbounded; not in worst case)"
            if a.get("mode") == "cascade":
                what += " (cumulative)"
            rows.append([f"{proto} ({rep['config']})", what]
                        + [pct(v) for v in _values(a, n_members)])
        rows.append([f"{proto} ({rep['config']})", "worst case"]
                    + [pct(v) for v in _values(res["worst_case"], n_members)])
    return format_table(
        ["protocol", "attack"] + _model_names(first), rows,
        title=f"Accuracy per attack, {eps_text}: ensemble with its real combiner; "
              "members attacked alone with their own gradients (transfer-m<i>: examples "
              "crafted on member i, scored on every model)")


def _curve_table(reports: dict, order: list[str]) -> str:
    first = reports[order[0]]
    n_members = len(first["members"])
    rows = []
    for proto in order:
        for res in reports[proto]["results"]:
            rows.append([f"{proto} ({reports[proto]['config']})", f"{res['eps']:.4g}"]
                        + [pct(v) for v in _values(res["worst_case"], n_members)])
    return format_table(["protocol", "eps"] + _model_names(first), rows,
                        title="Worst-case accuracy vs eps (L-inf)")


def _checks_block(proto: str, report: dict) -> str:
    lines = [f"Gradient-masking checks, protocol {proto} ({report['config']}):"]
    for c in report["masking_checks"]:
        state = {True: "ok  ", False: "WARN", None: "skip"}[c["passed"]]
        lines.append(f"  [{state}] {c['id']}: {c['detail']} (see {c['doc']})")
    return "\n".join(lines)


def accuracy_plot(reports: dict[str, dict], path) -> None:
    """PNG of worst-case accuracy vs eps, one line per model, solid adaptive, dashed paper."""
    from edgempir.plotting import finish_eps_axes, new_figure, save_png

    fig, ax = new_figure((6.4, 4.4))
    import matplotlib.pyplot as plt  # after new_figure: it selects the Agg backend first

    styles = {"adaptive": ("-", "o"), "paper": ("--", "s")}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for proto in ("adaptive", "paper"):
        rep = reports.get(proto)
        if not rep:
            continue
        n_members = len(rep["members"])
        # eps 0 is the clean accuracy: a single eps still draws a line from it
        eps = [0.0] + [r["eps"] for r in rep["results"]]
        for i, name in enumerate(_model_names(rep)):
            acc = [_values(rep["results"][0]["clean"], n_members)[i]]
            acc += [_values(r["worst_case"], n_members)[i] for r in rep["results"]]
            if all(a is None for a in acc[1:]):
                continue  # not attacked under this protocol/config (paper quick members)
            acc = [float("nan") if a is None else 100 * a for a in acc]
            line, marker = styles[proto]
            ax.plot(eps, acc, line, marker=marker, color=colors[i % len(colors)],
                    label=f"{name}, {proto} ({rep['config']})",
                    linewidth=2.2 if i == 0 else 1.2)
    finish_eps_axes(ax, "worst-case accuracy (%)")
    ax.set_title("Accuracy vs eps (solid: protocol adaptive, dashed: protocol paper)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_png(fig, path)

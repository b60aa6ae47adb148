"""Readable tables of train and eval results, and eval's plot (host side).

The table layout itself is :mod:`edgempir.tables` (device-safe: bench prints with it too).
"""
from __future__ import annotations

from edgempir.tables import format_table, pct

__all__ = ["accuracy_plot", "eval_tables", "format_table", "pct", "training_table"]


def training_table(manifest: dict) -> str:
    ds = manifest["dataset"]
    rows = [[f"member {m['index']}", m["spec"], pct(m["clean_accuracy"]),
             f"{sum(m['time_per_epoch_s']):.0f} s"] for m in manifest["members"]]
    ens = manifest["metrics"]["clean_accuracy"]["ensemble"]
    for comb, acc in ens.items():
        mark = " (deployed)" if comb == manifest["combiner"] else ""
        rows.append([f"ensemble {comb}{mark}", "+".join(m["spec"] for m in manifest["members"]),
                     pct(acc), ""])
    return format_table(["model", "bits", "clean accuracy", "train time"], rows,
                        title=f"Clean test accuracy on {ds['name']} ({ds['n_test']} test images, "
                              f"arch {manifest['arch']}); protocol: clean, no attack")


# ---------------------------------------------------------------- edgempir eval
# Every robustness figure printed here names its protocol (and configuration): a number
# without the attack that produced it is not something a safety case can cite.

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
    3. with several eps, worst case per eps.
    """
    order = [p for p in ("paper", "adaptive") if p in reports]
    if not order:
        return "no evaluation reports"
    first = reports[order[0]]
    n_members = len(first["members"])
    models = _model_names(first)
    ds = (manifest or {}).get("dataset", {}).get("name") or first.get("run", {}).get("dataset")
    blocks = []

    # 1. summary
    # the protocols may differ in n and eps (protocol paper: the reference's eps, the whole
    # test set), so every column says its own
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
    eps0 = first["results"][0]["eps"]
    all_eps = {reports[p]["results"][0]["eps"] for p in order}
    eps_text = f"eps {eps0:.4g}" if len(all_eps) == 1 else "eps per protocol"
    labels = "; ".join(f"{p}: {reports[p]['config_label']}" for p in order)
    blocks.append(format_table(
        headers, rows,
        title=f"Robust accuracy on {ds}, {eps_text} (L-inf), protocols side by side "
              f"[{labels}]. Worst case = per sample over the protocol's attacks; headline: "
              f"protocol adaptive."))

    # 2. every attack
    rows = []
    for proto in order:
        rep = reports[proto]
        res = rep["results"][0]
        for name, a in res["attacks"].items():
            vals = _values(a, n_members)
            what = name
            if a.get("norm") == "L2":
                what += " (L2, unbounded; not in worst case)"
            if a.get("mode") == "cascade":
                what += " (cumulative)"
            rows.append([f"{proto} ({rep['config']})", what] + [pct(v) for v in vals])
        rows.append([f"{proto} ({rep['config']})", "worst case"]
                    + [pct(v) for v in _values(res["worst_case"], n_members)])
    blocks.append(format_table(
        ["protocol", "attack"] + models, rows,
        title=f"Accuracy per attack, {eps_text}: ensemble with its real combiner; "
              "members attacked alone with their own gradients (transfer-m<i>: examples "
              "crafted on member i, scored on every model)"))

    # 3. curve
    if any(len(reports[p]["results"]) > 1 for p in order):
        rows = []
        for proto in order:
            for res in reports[proto]["results"]:
                rows.append([f"{proto} ({reports[proto]['config']})", f"{res['eps']:.4g}"]
                            + [pct(v) for v in _values(res["worst_case"], n_members)])
        blocks.append(format_table(["protocol", "eps"] + models, rows,
                                   title="Worst-case accuracy vs eps (L-inf)"))

    # masking checks
    for proto in order:
        checks = reports[proto].get("masking_checks") or []
        if checks:
            lines = [f"Gradient-masking checks, protocol {proto} ({reports[proto]['config']}):"]
            for c in checks:
                state = {True: "ok  ", False: "WARN", None: "skip"}[c["passed"]]
                lines.append(f"  [{state}] {c['id']}: {c['detail']} (see {c['doc']})")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def accuracy_plot(reports: dict[str, dict], path) -> None:
    """PNG of worst-case accuracy vs eps, one line per model, solid adaptive, dashed paper."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from edgempir.fsutil import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    styles = {"adaptive": ("-", "o"), "paper": ("--", "s")}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for proto in ("adaptive", "paper"):
        rep = reports.get(proto)
        if not rep:
            continue
        names = _model_names(rep)
        n_members = len(rep["members"])
        # eps 0 is the clean accuracy: a single eps still draws a line from it
        eps = [0.0] + [r["eps"] for r in rep["results"]]
        for i, name in enumerate(names):
            acc = [_values(rep["results"][0]["clean"], n_members)[i]]
            acc += [_values(r["worst_case"], n_members)[i] for r in rep["results"]]
            if all(a is None for a in acc[1:]):
                continue  # not attacked under this protocol/config (paper quick members)
            acc = [float("nan") if a is None else 100 * a for a in acc]
            line, marker = styles[proto]
            ax.plot(eps, acc, line, marker=marker, color=colors[i % len(colors)],
                    label=f"{name}, {proto} ({rep['config']})",
                    linewidth=2.2 if i == 0 else 1.2)
    ax.set_xlim(left=0)
    ax.set_xlabel("eps (L-inf); eps 0 = clean accuracy")
    ax.set_ylabel("worst-case accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy vs eps (solid: protocol adaptive, dashed: protocol paper)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

"""The accuracy-vs-eps plot next to docs/RESULTS.md (matplotlib, written atomically)."""
from __future__ import annotations

from edgempir.experiment.curves import curve_lines, curve_series
from edgempir.plotting import finish_eps_axes, new_figure, save_png


def accuracy_plot(results: dict, path) -> None:
    """PNG: worst-case accuracy vs eps, one line per row that has a curve; solid adaptive,
    dashed paper; eps 0 is the clean accuracy."""
    fig, ax = new_figure((7.2, 4.8))
    drawn = _draw_curves(ax, results["curves"])
    finish_eps_axes(ax, "accuracy under attack (%)")
    n = next((c["n"] for cv in results["curves"].values() for c in cv["protocols"].values()),
             None)
    ax.set_title(f"{results['dataset']}, accuracy vs eps on n={n} test images\nsolid: "
                 "protocol adaptive, worst case (PGD + transfer); dashed: protocol paper, "
                 "mean of attacks", fontsize=8.5)
    if drawn:
        ax.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    save_png(fig, path)


def _draw_curves(ax, curves: dict) -> int:
    """Draw every curve line the plot shows; return how many."""
    drawn = 0
    for model, proto, key, what, c in curve_series(curves):
        if proto == "paper" and key == "worst_case":
            continue
        for target, name, acc in curve_lines(model, c, key):
            color = _line_color(model, target, c)
            if color is None or all(a is None for a in acc[1:]):
                continue
            ys = [float("nan") if a is None else 100 * a for a in acc]
            ax.plot([0.0] + c["eps"], ys, "--" if proto == "paper" else "-",
                    marker="s" if proto == "paper" else "o", color=color,
                    linewidth=2.4 if target == "ensemble" else 1.0,
                    markersize=5 if target == "ensemble" else 3,
                    label=f"{name}, {proto} ({c['config']}): {what}")
            drawn += 1
    return drawn


def _line_color(model: str, target: str, c: dict) -> str | None:
    """One colour per model; EMPIR's members in their own colours; EMPIR-adv's members are
    left to the table (the plot stays readable)."""
    if target == "ensemble":
        return {"empir": "tab:blue", "empir-adv": "tab:green", "fp32-adv": "tab:red"}[model]
    if model != "empir":
        return None
    i = int(target[1:])
    if c["members"][i] == "fp32":
        return "tab:orange"
    return ("tab:gray", "tab:purple", "tab:brown", "tab:pink")[i % 4]

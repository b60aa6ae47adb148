"""Accuracy vs eps: one lighter eval per model on a copy of its run, the curve file it
leaves, and the series the table and the plot draw from it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgempir.experiment.config import MODELS, ExperimentConfig
from edgempir.experiment.layout import curve_copy, curve_path, is_trained, run_dir
from edgempir.experiment.workdir import copy_run, now, read_json_files

PAPER_ATTACKS = ["fgsm", "bim", "pgd", "cw"]
ADAPTIVE_ATTACKS = ["pgd"]


def curve_protocols(model: str) -> list[str]:
    # the paper's protocol is shown for the default EMPIR only: that is the paper's claim
    return ["paper", "adaptive"] if model == "empir" else ["adaptive"]


def curve_call(cfg: ExperimentConfig, model: str) -> dict:
    """The evaluate call of one curve: PGD only under adaptive (ensemble PGD + transfer from
    each member); under paper the paper's four attacks, so that its own summary, the mean of
    attacks, has a curve too (CW-L2 is unbounded: run once, not in the L-inf worst case)."""
    protocols = curve_protocols(model)
    attacks = PAPER_ATTACKS if "paper" in protocols else ADAPTIVE_ATTACKS
    return cfg.eval_call(protocols, cfg.curve_eps_values, cfg.curve_n, attacks=attacks)


def run_curve(cfg: ExperimentConfig, out: Path, model: str, progress: bool,
              echo: Callable[[str], None]) -> None:
    """Worst case vs eps on a copy of the run (the copy's eval/ keeps the main eval intact)."""
    # the module, not the function, is imported: its evaluate is looked up at call time
    from edgempir import robustness
    from edgempir.fsutil import atomic_write_json

    copy = curve_copy(out, model)
    if not is_trained(copy):
        copy_run(run_dir(out, model), copy)
    result = robustness.evaluate(copy, progress=progress, echo=echo, **curve_call(cfg, model))
    curve = {"model": model, "written": now(), "protocols": {}}
    for proto, rep in result.reports.items():
        curve["protocols"][proto] = {
            "config": rep["config"], "config_label": rep["config_label"],
            "n": rep["n_examples"], "attacks": list(rep["attacks"]),
            "members": [m["spec"] for m in rep["members"]],
            "eps": [r["eps"] for r in rep["results"]],
            "clean": rep["results"][0]["clean"],
            "worst_case": [_curve_point(r["worst_case"]) for r in rep["results"]]}
        if proto == "paper":
            curve["protocols"][proto]["mean_of_attacks"] = [
                _curve_point(r["mean_of_attacks"]) for r in rep["results"]]
    atomic_write_json(curve_path(out, model), curve)


def _curve_point(fig: dict) -> dict:
    return {"ensemble": fig["ensemble"], "members": fig["members"]}


def read_curves(out: Path) -> dict[str, dict]:
    return {model: curve for model in MODELS
            for curve in read_json_files([curve_path(out, model)])}


def curve_series(curves: dict):
    """Every curve: (model, protocol, figure key, its label, curve). Under protocol paper the
    plot shows the paper's own summary (mean of attacks): its worst case follows the
    adaptive one closely and is in the table."""
    for model, curve in curves.items():
        for proto, c in curve["protocols"].items():
            keys = ["worst_case"] + (["mean_of_attacks"] if "mean_of_attacks" in c else [])
            for key in keys:
                what = "worst case" if key == "worst_case" else "mean of attacks"
                yield model, proto, key, what, c


def curve_lines(model: str, c: dict, key: str = "worst_case"):
    """(target, name, [clean, acc per eps]) for the ensemble and, if several, each member."""
    owner = {"empir": "EMPIR", "empir-adv": "EMPIR-adv", "fp32-adv": "fp32-adv"}[model]
    yield ("ensemble", owner, [c["clean"]["ensemble"]] + [w["ensemble"] for w in c[key]])
    if len(c["members"]) > 1:
        for i, spec in enumerate(c["members"]):
            yield (f"m{i}", f"{owner} member {i} {spec}",
                   [c["clean"]["members"][i]] + [w["members"][i] for w in c[key]])

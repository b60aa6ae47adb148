"""Table rows: one eval step per model and protocol, run through
``edgempir.robustness.evaluate``, and the rows extracted from its report (members alone
first, the ensemble last); their labels and the table's order."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgempir.experiment.config import MODELS, SCHEMA, SCHEMA_VERSION, ExperimentConfig
from edgempir.experiment.layout import row_path, rows_dir, run_dir
from edgempir.experiment.workdir import now, read_json_files


@dataclass(frozen=True)
class EvalStep:
    """One evaluation of one model under one protocol; it gives one or more rows."""

    model: str
    protocol: str

    @property
    def name(self) -> str:
        return f"eval-{self.model}-{self.protocol}"

    @property
    def ensemble_row(self) -> str:
        return row_id(self.model, self.protocol, None)


def row_id(model: str, protocol: str, member: int | None) -> str:
    return f"{model}-{protocol}" if member is None else f"{model}-m{member}-{protocol}"


EVAL_STEPS = {
    "empir": (EvalStep("empir", "paper"), EvalStep("empir", "adaptive")),
    "empir-adv": (EvalStep("empir-adv", "adaptive"),),
    "fp32-adv": (EvalStep("fp32-adv", "adaptive"),),
}


def expected_rows() -> list[str]:
    """Every ensemble row the experiment has (member rows depend on the runs)."""
    return [s.ensemble_row for m in MODELS for s in EVAL_STEPS[m]]


def step_done(out: Path, step: EvalStep) -> bool:
    # the ensemble row is written last, so its file marks the whole step as done
    return row_path(out, step.ensemble_row).is_file()


def eval_step_call(cfg: ExperimentConfig, step: EvalStep) -> dict:
    """The evaluate call of one eval step: the table's eps and n, every attack."""
    return cfg.eval_call([step.protocol], [cfg.eps], cfg.n)


def run_eval_step(cfg: ExperimentConfig, out: Path, step: EvalStep, progress: bool,
                  echo: Callable[[str], None]) -> None:
    # the module, not the function, is imported: its evaluate is looked up at call time
    from edgempir import robustness
    from edgempir.fsutil import atomic_write_json

    run = run_dir(out, step.model)
    result = robustness.evaluate(run, progress=progress, echo=echo, **eval_step_call(cfg, step))
    report = result.reports[step.protocol]
    report_path = run / "eval" / f"{step.protocol}-{cfg.config}.json"
    for row in rows_from_report(step, report, report_path):
        atomic_write_json(row_path(out, row["id"]), row)


def rows_from_report(step: EvalStep, report: dict, report_path: Path) -> list[dict]:
    """The step's rows: each member that was attacked (alone) first, the ensemble last.

    A single-model run (fp32-adv) gives only its ensemble row: the two are the same model."""
    res = report["results"][0]
    n_members = len(report["members"])
    rows = []
    if n_members > 1:
        for i in range(n_members):
            if res["worst_case"]["members"][i] is None:
                continue  # not attacked alone under this protocol/config (paper quick)
            rows.append(_row(step, report, report_path, i))
    rows.append(_row(step, report, report_path, None))
    return rows


def _row(step: EvalStep, report: dict, report_path: Path, member: int | None) -> dict:
    res = report["results"][0]

    def pick(fig):
        if fig is None:
            return None
        return fig.get("ensemble") if member is None else (fig.get("members") or [])[member]

    attacks = {name: pick(a) for name, a in res["attacks"].items()}
    return {
        "schema": f"{SCHEMA}.row", "schema_version": SCHEMA_VERSION,
        "id": row_id(step.model, step.protocol, member), "model": step.model,
        "member": member,
        "spec": ("+".join(m["spec"] for m in report["members"]) if member is None
                 else report["members"][member]["spec"]),
        "protocol": step.protocol, "config": report["config"],
        "config_label": report["config_label"], "n": report["n_examples"],
        "seed": report["seed"], "eps": res["eps"], "norm": report["norm"],
        "combiner": report["combiner"] if member is None else "member alone",
        "clean": pick(res["clean"]), "worst_case": pick(res["worst_case"]),
        "worst_case_over": res["worst_case"].get("over"),
        "attacks": {k: v for k, v in attacks.items() if v is not None},
        "attack_notes": {k: _attack_note(a) for k, a in res["attacks"].items()
                         if attacks.get(k) is not None and _attack_note(a)},
        "mean_of_attacks": pick(res.get("mean_of_attacks")),
        "masking_checks": report.get("masking_checks") if member is None else [],
        "report": str(report_path), "report_seconds": report.get("seconds"),
        "written": now(),
    }


def _attack_note(a: dict) -> str:
    if a.get("norm") == "L2":
        return "L2, unbounded; not in the worst case"
    if a.get("mode") == "cascade":
        return "cumulative"
    return ""


def read_rows(out: Path) -> dict[str, dict]:
    return {row["id"]: row for row in read_json_files(sorted(rows_dir(out).glob("*.json")))
            if isinstance(row, dict) and "id" in row}  # a damaged row is recomputed


def row_label(row: dict) -> str:
    model, member, spec = row["model"], row["member"], row["spec"]
    kind = {"empir": "default training", "empir-adv": "PGD-trained",
            "fp32-adv": "PGD-trained"}[model]
    if model == "fp32-adv":
        return "fp32 alone, PGD-trained, same training compute as EMPIR-adv's members"
    if member is None:
        name = "EMPIR" if model == "empir" else "EMPIR-adv"
        return f"{name} ({spec}, {row['combiner']}), {kind}"
    owner = "EMPIR" if model == "empir" else "EMPIR-adv"
    return f"{spec} alone ({owner}'s member {member}), {kind}"


def row_order(row: dict) -> tuple:
    """The issue's order: fp32 alone, low-bit members alone, EMPIR under paper then
    adaptive, EMPIR-adv, the same-compute fp32; the adversarial members alone last."""
    is_fp32 = row["spec"] == "fp32"
    if row["model"] == "empir" and row["member"] is not None:
        group = (0 if is_fp32 else 1) if row["protocol"] == "adaptive" else 2
    elif row["model"] == "empir":
        group = 3 if row["protocol"] == "paper" else 4
    elif row["model"] == "empir-adv" and row["member"] is None:
        group = 5
    elif row["model"] == "fp32-adv":
        group = 6
    else:
        group = 7
    return (group, row["member"] if row["member"] is not None else -1)

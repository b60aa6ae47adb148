"""results.json (schema in docs/EXPERIMENT.md) from everything on disk, and the files
written from it: results.json, docs/RESULTS.md and the plot next to it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgempir.experiment.command_lines import commands
from edgempir.experiment.compute import model_summary, row_compute
from edgempir.experiment.config import (
    MODELS,
    NAME,
    PLOT_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    ExperimentConfig,
)
from edgempir.experiment.curves import read_curves
from edgempir.experiment.layout import results_path
from edgempir.experiment.markdown import results_markdown
from edgempir.experiment.plot import accuracy_plot
from edgempir.experiment.rows import expected_rows, read_rows, row_label, row_order
from edgempir.experiment.workdir import invocations, now


def collect(cfg: ExperimentConfig, out: Path) -> dict:
    """Everything on disk, in the results.json schema (docs/EXPERIMENT.md)."""
    from edgempir.robustness import versions

    models = {m: model_summary(out, m) for m in MODELS}
    models = {k: v for k, v in models.items() if v is not None}
    rows = sorted(read_rows(out).values(), key=row_order)
    for row in rows:
        row["label"] = row_label(row)
        row["compute"] = row_compute(row, models)
    done = {r["id"] for r in rows}
    missing = [r for r in expected_rows() if r not in done]
    curves = read_curves(out)
    missing += [f"curve-{m}" for m in MODELS if m not in curves]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "experiment": NAME,
        "generated": now(), "settings": cfg.settings(), "out": str(out),
        "complete": not missing, "missing": missing,
        "dataset": cfg.dataset, "norm": "Linf", "eps": cfg.eps,
        "rows": rows, "models": models, "curves": curves,
        "commands": commands(cfg, out),
        "invocations": invocations(out),
        "versions": versions(),
    }


def write_results(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> dict:
    from edgempir.fsutil import atomic_write_json, atomic_write_text

    results = collect(cfg, out)
    files = {"results_json": str(results_path(out))}
    if cfg.results_md:
        md = Path(cfg.results_md)
        plot = md.with_name(PLOT_NAME)
        accuracy_plot(results, plot)
        files["plot"] = str(plot)
        files["results_md"] = str(md)
        results["files"] = files
        atomic_write_text(md, results_markdown(results, plot.name))
    results["files"] = files
    atomic_write_json(results_path(out), results)
    return results

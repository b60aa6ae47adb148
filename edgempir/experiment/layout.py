"""Where everything lives inside an experiment directory (``--out``): one home per path.

::

    experiment.json          the settings this directory was started with
    invocations.jsonl        one line per invocation (argv, start time)
    runs/<model>/            one run directory per trained model (eval/ inside)
    rows/<row>.json          one finished table row each, written atomically
    curves/<model>/          a copy of the run for the curve evals (keeps run/eval intact)
    curves/<model>.json      the finished curve of that model
    results.json             every row, model compute, curves, commands, versions
    locks/<step>.lock        step locks (two invocations may share the directory)
"""
from __future__ import annotations

from pathlib import Path


def state_path(out: Path) -> Path:
    return out / "experiment.json"


def invocations_path(out: Path) -> Path:
    return out / "invocations.jsonl"


def run_dir(out: Path, model: str) -> Path:
    return out / "runs" / model


def is_trained(run: Path) -> bool:
    # train writes the manifest last: its presence means the run is complete
    return (run / "manifest.json").is_file()


def rows_dir(out: Path) -> Path:
    return out / "rows"


def row_path(out: Path, row_id: str) -> Path:
    return rows_dir(out) / f"{row_id}.json"


def curve_copy(out: Path, model: str) -> Path:
    return out / "curves" / model


def curve_path(out: Path, model: str) -> Path:
    return out / "curves" / f"{model}.json"


def results_path(out: Path) -> Path:
    return out / "results.json"


def locks_dir(out: Path) -> Path:
    return out / "locks"


def lock_path(out: Path, step_name: str) -> Path:
    return locks_dir(out) / f"{step_name}.lock"

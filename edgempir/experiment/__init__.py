"""The paper-vs-adaptive experiment (issue 8): what EMPIR buys, measured honestly.

One command trains and evaluates, on one test subset and one eps, these models:

- ``empir``: the paper's ensemble (default training; or a copy of an existing run);
  scored by protocol paper and by protocol adaptive, and each member alone;
- ``empir-adv``: the same members, each adversarially trained (Madry PGD), adaptive;
- ``fp32-adv``: one full-precision model, PGD-trained for as many epochs as the
  adversarial members together (the same training compute: the same number of
  forward/backward passes over the same network), adaptive;

and a robust-accuracy-vs-eps curve for each (PGD only, on a smaller subset). Everything is
done by the library's own ``edgempir.train.train`` (with a TrainConfig) and
``edgempir.robustness.evaluate``; this package only orders the steps, keeps their results
and writes the tables.

Where each part lives (docs/ARCHITECTURE.md):

- ``config``: ExperimentConfig, the fixed names, validation before anything heavy;
- ``layout``: every path inside ``--out``; ``workdir``: opening it, invocations, step locks;
- ``training``: the models' TrainConfigs and training (or copying) them;
- ``rows``: the eval steps and the table rows extracted from eval's reports;
- ``curves``: the accuracy-vs-eps evals and their series;
- ``compute``: MACs, bit-operations, weight bytes and training passes;
- ``steps``: the plan and the scheduler (``run_experiment``);
- ``results``: results.json; ``command_lines``: the equivalent command lines;
- ``tables``, ``prose``, ``markdown``, ``plot``: the text table, docs/RESULTS.md and its plot.

Resume: a row whose JSON exists is never recomputed; a training resumes from its last
epoch (``train --resume``); an eval resumes from its finished attacks (eval/partial/).
"""
from __future__ import annotations

from edgempir.experiment.command_lines import commands
from edgempir.experiment.compute import member_compute, model_summary, row_compute, training_compute
from edgempir.experiment.config import (
    CURVE_FACTORS,
    DATASETS,
    DEFAULT_OUT,
    DEFAULT_RESULTS_MD,
    MODELS,
    NAME,
    PARTS,
    PLOT_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    ExperimentConfig,
    ExperimentError,
    parse_curve_eps,
    validate,
)
from edgempir.experiment.curves import curve_protocols, read_curves, run_curve
from edgempir.experiment.layout import curve_path, rows_dir, run_dir
from edgempir.experiment.markdown import results_markdown
from edgempir.experiment.plot import accuracy_plot
from edgempir.experiment.prose import findings
from edgempir.experiment.results import collect, write_results
from edgempir.experiment.rows import (
    EVAL_STEPS,
    EvalStep,
    expected_rows,
    read_rows,
    row_id,
    row_label,
    rows_from_report,
    run_eval_step,
    step_done,
)
from edgempir.experiment.steps import LOCK_POLL_S, Step, plan, run_experiment
from edgempir.experiment.tables import SUMMARY_HEADERS, attack_rows, summary_rows, text_table
from edgempir.experiment.training import ensure_model, train_configs
from edgempir.experiment.workdir import open_dir, try_lock

#: the name tests and older callers use for :func:`open_dir`
_open_dir = open_dir

__all__ = [
    "CURVE_FACTORS", "DATASETS", "DEFAULT_OUT", "DEFAULT_RESULTS_MD", "EVAL_STEPS",
    "LOCK_POLL_S", "MODELS", "NAME", "PARTS", "PLOT_NAME", "SCHEMA", "SCHEMA_VERSION",
    "SUMMARY_HEADERS", "EvalStep", "ExperimentConfig", "ExperimentError", "Step",
    "accuracy_plot", "attack_rows", "collect", "commands", "curve_path", "curve_protocols",
    "ensure_model", "expected_rows", "findings", "member_compute", "model_summary", "open_dir",
    "parse_curve_eps", "plan", "read_curves", "read_rows", "results_markdown", "row_compute",
    "row_id", "row_label", "rows_dir", "rows_from_report", "run_curve", "run_dir",
    "run_eval_step", "run_experiment", "step_done", "summary_rows", "text_table",
    "train_configs", "training_compute", "try_lock", "validate", "write_results",
]

"""``edgempir experiment``: experiments that train and evaluate several models in one go."""
from __future__ import annotations

import click

from edgempir.cli.common import json_option, require_host, seed_option
from edgempir.validate import Finite, threads_type

EXAMPLE = """
\b
Examples:
  edgempir experiment paper-vs-adaptive                        # ~all defaults, hours on 2 cores
  edgempir experiment paper-vs-adaptive --empir-run runs/fashion-mnist --adv-epochs 2
  edgempir experiment paper-vs-adaptive --only empir           # some parts now, the rest later
  edgempir experiment paper-vs-adaptive --json                 # the results JSON on stdout
\b
Writes OUT/runs/<model>/ (one run directory per trained model), OUT/rows/<row>.json,
OUT/curves/, OUT/results.json, and --results-md with the plot next to it
(results-acc-vs-eps.png). Rerun the same command after an interruption: finished rows are
kept, trainings and evals resume. See docs/EXPERIMENT.md.
"""


@click.group()
def experiment():
    """Experiments that train and evaluate several models (docs/EXPERIMENT.md)."""


@experiment.command(name="paper-vs-adaptive", epilog=EXAMPLE)
@click.option("--out", default="experiments/paper-vs-adaptive", type=click.Path(file_okay=False),
              help="Experiment directory (runs, rows, results.json).")
@click.option("--dataset", type=click.Choice(["fashion-mnist", "mnist", "cifar10", "synthetic"]),
              default="fashion-mnist", help="Data set (synthetic: for tests).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              envvar="EDGEMPIR_DATA", show_envvar=True,
              help="Folder with the data set's files [default: the Debian package's folder].")
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=2000,
              help="Test images for every table row (same subset for all).")
@seed_option
@click.option("--epochs", type=click.IntRange(1, 10_000), default=5,
              help="Epochs per member of the default-trained EMPIR (unless --empir-run).")
@click.option("--adv-epochs", type=click.IntRange(1, 10_000), default=1,
              help="PGD-training epochs per adversarial member; the same-compute fp32 model "
                   "gets this times the number of members.")
@click.option("--adv-steps", type=click.IntRange(1, 10_000), default=3,
              help="PGD steps per training batch.")
@click.option("--adv-eps", type=Finite(0, 1, lo_open=True, hi_open=True),
              default=None, help="L-inf budget of adversarial training [default: the data "
                                 "set's eval eps, 0.1 for Fashion-MNIST].")
@click.option("--config", "config_name", type=click.Choice(["quick", "standard"]),
              default="quick", help="Eval configuration of every row (docs/EVAL.md); "
                                    "standard is ~45 min per model at n=1000 on 2 cores.")
@click.option("--curve-eps", default=None,
              help="Radii of the accuracy-vs-eps curve, e.g. 0.05,0.1,0.2 "
                   "[default: 0.5, 1 and 2 x the data set's eps].")
@click.option("--curve-n", type=click.IntRange(1, 1_000_000), default=300,
              help="Test images for the curve (PGD only).")
@click.option("--threads", type=threads_type(), default=None,
              help="Torch threads [default: torch's choice for training, 1 for eval].")
@click.option("--empir-run", type=click.Path(file_okay=False), default=None,
              help="Reuse this default-trained EMPIR run (copied into --out, not modified) "
                   "instead of training one.")
@click.option("--only", default="empir,empir-adv,fp32-adv,curve",
              help="Parts to compute now (the tables show every finished row): empir, "
                   "empir-adv, fp32-adv, curve.")
@click.option("--results-md", default="docs/RESULTS.md", type=click.Path(dir_okay=False),
              help="Markdown report to write; the plot goes next to it.")
@click.option("--force", is_flag=True, help="Discard the experiment directory and start over.")
@json_option
def paper_vs_adaptive(out, dataset, data_dir, n, seed, epochs, adv_epochs, adv_steps, adv_eps,
                      config_name, curve_eps, curve_n, threads, empir_run, only, results_md,
                      force, as_json):
    """EMPIR scored by protocol paper and adaptive, next to its members, EMPIR with
    PGD-trained members, and one PGD-trained fp32 model of the same training compute."""
    require_host("experiment paper-vs-adaptive")
    import sys

    from edgempir.experiment import ExperimentConfig, parse_curve_eps, run_experiment, text_table
    from edgempir.fsutil import dumps_json

    cfg = ExperimentConfig(out=out, dataset=dataset, data_dir=data_dir, n=n, seed=seed,
                           epochs=epochs, adv_epochs=adv_epochs, adv_steps=adv_steps,
                           adv_eps=adv_eps, config=config_name,
                           curve_eps=parse_curve_eps(curve_eps, dataset), curve_n=curve_n,
                           threads=threads, empir_run=empir_run,
                           only=tuple(p.strip() for p in only.split(",") if p.strip()),
                           results_md=results_md)
    try:
        results = run_experiment(cfg, force=force, progress=not as_json,
                                 echo=lambda s: click.echo(s, err=True),
                                 argv=_command_line(click.get_current_context()))
    except KeyboardInterrupt:
        click.echo(f"Interrupted: finished rows, trainings and attacks are kept in {out}; "
                   "rerun the same command to resume.", err=True)
        sys.exit(130)
    if as_json:
        click.echo(dumps_json(results), nl=False)
        return
    click.echo(text_table(results))
    click.echo("")
    for f in results["files"].values():
        click.echo(f"wrote {f}")


def _command_line(ctx: click.Context) -> list[str]:
    """The command as the user gave it: every option not left at its default, in the order
    of --help (independent of how the process was started: console script, python -m, or
    a test's CliRunner)."""
    from click.core import ParameterSource

    argv = ["edgempir", "experiment", ctx.info_name]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) in (None, ParameterSource.DEFAULT):
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            argv += [param.opts[0]] if value else []
        elif value is not None:
            argv += [param.opts[0], str(value)]
    return argv


command = experiment

"""``edgempir eval``: robustness of a trained run under protocol paper and/or adaptive."""
from __future__ import annotations

import click

from edgempir.cli.common import json_option, require_host, seed_option
from edgempir.validate import batch_type, threads_type

EXAMPLE = """
\b
Examples:
  edgempir eval runs/fm                          # protocol adaptive, config standard (slow)
  edgempir eval runs/fm --protocol both --config quick     # the README's main job
  edgempir eval runs/fm --eps 0.05,0.1,0.2       # a curve (PNG in runs/fm/eval/)
  edgempir eval runs/fm --protocol paper --attacks fgsm,pgd --n 500
\b
Writes RUN/eval/<protocol>-<config>.json (schema edgempir.eval v1, docs/EVAL.md),
RUN/eval/model-card-<protocol>-<config>.json (RobustBench's model-info fields),
RUN/eval/adv-<protocol>.npz, RUN/eval/table-<config>.txt and RUN/eval/acc-vs-eps.png;
protocol adaptive also measures the reject policies (majority, unanimous, fp32 threshold)
under attackers aimed at them: RUN/eval/risk-coverage-<config>.png.
Finished attacks are kept in RUN/eval/partial/: rerun the same command to resume.
\b
On several processes (torchrun shares the test images over the ranks; per-image results
are the same as in one process, rank 0 writes and prints; docs/DISTRIBUTED.md):
  torchrun --nproc-per-node 2 -m edgempir.cli eval runs/fm --config quick --threads 1
  edgempir eval runs/fm --config quick --nproc 2     # the same, torchrun started for you
"""


@click.command(name="eval", epilog=EXAMPLE)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--protocol", type=click.Choice(["adaptive", "paper", "both"]),
              default="adaptive",
              help="adaptive: attacks that know the deployed ensemble (the headline); "
                   "paper: the EMPIR paper's evaluation, for comparison; both.")
@click.option("--config", "config_name", type=click.Choice(["standard", "quick"]),
              default="standard",
              help="standard: PGD-100 x5 + AutoAttack (APGD-CE, APGD-T, FAB-T, Square "
                   "5000) + transfer; quick: a lighter, labelled subset (docs/EVAL.md).")
@click.option("--attacks", default=None,
              help="Comma-separated subset of the protocol's attacks, e.g. pgd,square "
                   "[default: all of the configuration's].")
@click.option("--eps", default=None,
              help="L-inf radius or comma-separated list (0.1, 8/255, 0.05,0.1,0.2) "
                   "[default: adaptive: MNIST 0.3, Fashion-MNIST 0.1, CIFAR-10 8/255; "
                   "paper: the reference's, MNIST and Fashion-MNIST 0.3, CIFAR-10 0.1].")
@click.option("--n", "--n-images", "n", type=click.IntRange(1, 1_000_000), default=None,
              help="Test images to attack [default: 300 quick; standard: adaptive 1000, "
                   "paper the whole test set]. Under torchrun write --n-images: torchrun's "
                   "own parser takes --n for an abbreviation of its options.")
@seed_option
@click.option("--batch-size", type=batch_type(), default=250,
              help="Images per attack batch.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              envvar="EDGEMPIR_DATA", show_envvar=True,
              help="Folder with the data set's files [default: the Debian package's folder].")
@click.option("--threads", type=threads_type(), default=1,
              help="Torch threads (small attack batches gain little from more; docs/EVAL.md).")
@click.option("--force", is_flag=True,
              help="Discard finished attacks kept from an earlier (interrupted) eval.")
@click.option("--allow-other-data", is_flag=True,
              help="Evaluate on test data other than the run's (its fingerprint differs); "
                   "the report records it.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1,
              help="Processes on this machine: starts torchrun with --nproc-per-node NPROC "
                   "on 127.0.0.1 (one thread each unless --threads); docs/DISTRIBUTED.md.")
@json_option
def command(run_dir, protocol, config_name, attacks, eps, n, seed, batch_size, data_dir, threads,
            force, allow_other_data, nproc, as_json):
    """Clean and adversarial accuracy of every member and of the ensemble (real combiner).

    The headline is protocol adaptive: per sample, the worst case over attacks on a
    differentiable surrogate of the deployed ensemble, AutoAttack and transfer from each
    member, scored with the ensemble's real combiner.
    """
    require_host("eval")
    import sys

    if nproc > 1:
        from edgempir.distributed import launch_local

        sys.exit(launch_local(nproc, ["eval", *_without_nproc(sys.argv[1:])],
                              n or _default_n(protocol, config_name)))

    from edgempir.eval import eval_tables, evaluate
    from edgempir.fsutil import dumps_json

    protocols = ["paper", "adaptive"] if protocol == "both" else [protocol]
    names = [a for a in attacks.split(",") if a.strip()] if attacks else None
    try:
        result = evaluate(run_dir, protocols=protocols, config=config_name, attacks=names,
                          eps=eps, n=n, seed=seed, batch_size=batch_size, data_dir=data_dir,
                          force=force, progress=not as_json, threads=threads,
                          allow_other_data=allow_other_data,
                          echo=lambda s: click.echo(s, err=True))
    except KeyboardInterrupt:
        if _leader():
            click.echo(f"Interrupted: finished attacks are kept in {run_dir}/eval/partial; "
                       "rerun the same command to resume.", err=True)
        sys.exit(130)
    if result.rank != 0:  # a rank other than 0 under torchrun: rank 0 prints and writes
        return
    if as_json:
        click.echo(dumps_json({"reports": result.reports,
                               "files": [str(f) for f in result.files]}), nl=False)
        return
    click.echo(eval_tables(result.reports))
    from edgempir.reject import reject_table

    for rep in result.reports.values():
        if "reject" in rep:
            click.echo("")
            click.echo(reject_table(rep))
    click.echo("")
    for f in result.files:
        click.echo(f"wrote {f}")


def _leader() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line after ``eval`` less ``--nproc N`` (the ranks must not relaunch)."""
    args = argv[argv.index("eval") + 1:] if "eval" in argv else argv
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _default_n(protocol: str, config_name: str) -> int | None:
    """The configuration's default number of images (None: the whole test set)."""
    from edgempir.eval import get_config

    protos = ["paper", "adaptive"] if protocol == "both" else [protocol]
    sizes = [get_config(p, config_name).n for p in protos]
    return None if None in sizes else min(sizes)

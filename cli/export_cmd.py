"""``edgempir export RUN --target arm|jetson|x86|PROFILE.toml``: build a deployment bundle.

Thin: options in, :func:`edgempir.targets.host.export.export_bundle` does the work (torch is
imported there, inside the command). The summary goes to stdout as a table, or as the
bundle's manifest in JSON with ``--json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from edgempir.cli.common import json_option, require_host, seed_option
from edgempir.fsutil import dumps_json


@click.command("export", epilog="""\b
Examples:
  edgempir export runs/fm --target arm --out bundles/fm-arm
  edgempir export runs/fm --target jetson --out bundles/fm-jetson
  edgempir export runs/fm --target my-board.toml --out bundles/fm-board --force
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--target", required=True,
              help="arm, jetson, x86, or the path of a TOML target profile.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Bundle directory to write [default: bundles/<run>-<target>].")
@click.option("--force", is_flag=True, help="Replace --out if it exists (only once the new "
              "bundle is complete).")
@click.option("--data-dir", default=None, help="Folder with the data set the run was trained on "
              "(for the calibration and clean sets).")
@click.option("--n-calib", default=512, type=click.IntRange(1, 100_000), help="Calibration images "
              "drawn from the training split.")
@click.option("--reject-policy", type=click.Choice(["majority", "unanimous"]),
              default="majority", show_default=True,
              help="Rule of the ensemble graph's 'accepted' output: majority accepts every "
                   "vote; unanimous only votes all members agree on (docs/BUNDLE.md).")
@click.option("--allow-other-data", is_flag=True, help="Build the calibration and clean sets "
              "from data other than the run's (its fingerprint differs); the bundle's "
              "source_run.data records it.")
@seed_option
@json_option
def command(run, target, out, force, data_dir, n_calib, seed, reject_policy, allow_other_data,
            as_json):
    """Export an evaluated run as a bundle for one target, validated against PyTorch."""
    require_host("export")
    import warnings

    # brevitas announces an optional kernel package at import; it says nothing about us
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    warnings.filterwarnings("ignore", message="brevitas.fx is deprecated")
    from edgempir.targets.host.export import export_bundle

    manifest = export_bundle(run, target, out, force=force, data_dir=data_dir, n_calib=n_calib,
                             seed=seed, progress=not as_json and sys.stderr.isatty(),
                             reject_policy=reject_policy,
                             allow_other_data=allow_other_data,
                             echo=lambda s: None)
    if as_json:
        click.echo(dumps_json(manifest), nl=False)
        return
    click.echo(summary(manifest, out))


def summary(m: dict, out) -> str:
    from edgempir.report import format_table, pct

    v = m["validation"]
    rows = []
    for mem in m["members"]:
        i = mem["index"]
        wb = mem["weight_bytes"]
        rows.append([f"{i} {mem['spec']}", mem["file"],
                     f"{wb['true_bits']:,} / {wb['stored']:,} / {wb['float32']:,}",
                     mem["integer_kernels"] if m["profile"]["export"]["integer_kernels"]
                     else "on device",
                     _pct(v["clean"]["member_files"]["members"][i]["agreement"]),
                     _pct(v["adv-adaptive"]["member_files"]["members"][i]["agreement"]),
                     f"{max(v[s]['member_files']['members'][i]['max_logit_diff'] for s in ('clean', 'adv-adaptive')):.2e}"])
    rows.append(["ensemble (vote)", m["ensemble_file"], "", "",
                 _pct(v["clean"]["ensemble_graph"]["ensemble"]["agreement"]),
                 _pct(v["adv-adaptive"]["ensemble_graph"]["ensemble"]["agreement"]), ""])
    title = (f"bundle {out or ''} for target {m['target']} ({m['runtime']}); validation: ONNX "
             f"Runtime vs PyTorch, top-1 agreement (floor {v['min_agreement']:.1%})")
    table = format_table(["member", "file", "weight bytes true/stored/fp32", "int kernels",
                          "agree clean", "agree adv", "max |dlogit|"], rows, title)
    ev = m["eval_info"]
    acc = m["host_accuracy"]
    tail = (f"host accuracy (PyTorch vote) on the bundled sets: clean {pct(acc['clean'])} "
            f"(n={m['calib']['clean']['n']}), adversarial {pct(acc['adv-adaptive'])} "
            f"(n={m['calib']['adv-adaptive']['n']}; protocol {ev['protocol']}, config "
            f"{ev.get('config')}, {ev.get('norm')} eps {_eps(ev.get('adv_eps'))})")
    return table + "\n" + tail


def _eps(e) -> str:
    return "?" if e is None else f"{e:.4g}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"

"""The ``edgempir`` command line: a click group, one small module per command.

Commands import their libraries inside the function body so that ``edgempir --help`` and
the device-side commands (``bench``, ``build``) never import torch.
Errors the user can fix (:class:`edgempir.errors.EdgempirError`) print one line and exit 2.
"""
from __future__ import annotations

import sys

import click

from edgempir._version import __version__
from edgempir.errors import EdgempirError


class _Group(click.Group):
    """Turns EdgempirError into ``Error: <message>`` and exit code 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgempirError as e:
            from edgempir.validate import one_line

            click.echo(f"Error: {one_line(str(e))}", err=True)  # a path's newline stays escaped
            sys.exit(2)
        except OSError as e:
            # the environment, not the input: a read-only or full file system, a folder
            # removed under us. The writers are atomic, so nothing half-written is left.
            from edgempir.fsutil import show_path
            from edgempir.validate import one_line

            where = f" ({show_path(e.filename)})" if e.filename else ""
            click.echo(f"Error: {one_line(e.strerror or str(e) or type(e).__name__)}{where}; "
                       "check the path and the file system, then run the command again",
                       err=True)
            sys.exit(2)
        except ModuleNotFoundError as e:
            # a host-only package missing in a device install: say which extra brings it
            from edgempir.cli.common import HOST_INSTALL_HINT, HOST_MODULES

            if (e.name or "").split(".")[0] not in HOST_MODULES:
                raise
            click.echo(f"Error: this command needs {e.name}, which this install lacks; "
                       f"{HOST_INSTALL_HINT}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "show_default": True})
@click.version_option(__version__, prog_name="edgempir")
def main():
    """Adversarially robust mixed-precision ensembles (EMPIR) for embedded accelerators.

    \b
    Typical flow:
      edgempir train  --dataset fashion-mnist --bits 2,4,32 --out runs/fm
      edgempir eval   runs/fm
      edgempir export runs/fm --target arm --out bundles/fm-arm
      edgempir bench  bundles/fm-arm
    """


def _register() -> None:
    # each module defines its click command and imports nothing heavy at module level
    from edgempir.cli import bench_cmd, build_cmd, eval_cmd, experiment_cmd, export_cmd, train_cmd

    for mod in (train_cmd, eval_cmd, export_cmd, build_cmd, bench_cmd, experiment_cmd):
        main.add_command(mod.command)


_register()

"""``edgempir bench BUNDLE``: the command that runs on the device (torch-free).

Thin: options in, :func:`edgempir.targets.device.bench.run_bench` does the work, the report goes
to a JSON file (atomically) and to stdout as a table, or as JSON only with ``--json``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from edgempir.cli.common import json_option
from edgempir.errors import EdgempirError
from edgempir.validate import MAX_BATCH, seconds_type, threads_type


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(not 1 <= b <= MAX_BATCH for b in sizes):
        raise click.BadParameter(f"{value!r}: give positive integers up to {MAX_BATCH}, "
                                 "separated by commas, e.g. 1,8,32")
    return sizes


MAX_COUNT = 1_000_000  # calls, images and queries: far beyond any bench, below any overflow


def _count_option(name: str, default: int | None, low: int, help_text: str):
    """A count option (calls, images, queries) from ``low`` up to :data:`MAX_COUNT`."""
    return click.option(name, default=default, type=click.IntRange(low, MAX_COUNT),
                        help=help_text)


def default_report_path(bundle: Path) -> Path:
    """Next to the bundle, not inside it: a deployed bundle directory may be read-only."""
    bundle = bundle.resolve()
    return bundle.parent / f"{bundle.name}-bench.json"


def _click_progress(label: str, total: int):
    @contextlib.contextmanager
    def bar():
        with click.progressbar(length=max(total, 1), label=label, file=sys.stderr,
                               show_eta=False) as b:
            yield lambda n=1: b.update(n)
    return bar()


@click.command("bench", epilog="""\b
Example:
  edgempir bench bundles/fm-arm
  edgempir bench bundles/fm-arm --batch-sizes 1,4 --duration 60 --out /tmp/fm-arm.json
""")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--batch-sizes", default="1,8,32", callback=_batch_sizes,
              help="Batch sizes to time, comma-separated.")
@_count_option("--repeats", 200, 1,
               "Timed calls per model and batch size (at most; see --time-cap).")
@_count_option("--warmup", 10, 0, "Untimed calls per model and batch size before timing.")
@click.option("--time-cap", default=2.0, type=seconds_type(0.01),
              help="Seconds of timed calls per model and batch size (at most).")
@click.option("--threads", default=None, type=threads_type(),
              help="Runtime threads  [default: the bundle profile's]")
@_count_option("--n", None, 1,
               "Images per evaluation set  [default: the whole set, as the host did]")
@_count_option("--square-queries", 300, 0,
               "Square attack query budget per image (0 skips the attack).")
@_count_option("--square-n", 100, 0, "Clean images the Square attack runs on (0 skips the attack).")
@click.option("--duration", default=0.0, type=seconds_type(0),
              help="Soak test length in seconds (0: no soak); reports latency drift and RSS "
                   "growth over time.")
@click.option("--no-memory", is_flag=True,
              help="Skip the peak-RSS measurement (it starts two child processes).")
@click.option("--seed", default=0, type=click.IntRange(0, 2**32 - 1),
              help="Seed of the Square attack.")
@click.option("--out", "out", default=None, type=click.Path(path_type=Path),
              help="JSON report path  [default: BUNDLE-bench.json next to the bundle]")
@json_option
def command(bundle: Path, batch_sizes, repeats, warmup, time_cap, threads, n, square_queries,
            square_n, duration, no_memory, seed, out, as_json):
    """Benchmark a deployed bundle on this machine, without torch.

    Verifies every file's sha256, then measures the engine as deployed: latency and
    throughput of the ensemble (members and vote in one graph) and of its fp32 member alone,
    peak memory, accuracy on the bundle's evaluation sets against the host's figures
    (drift), and a black-box Square attack on the engine itself. docs/BENCH.md explains
    every figure and the JSON report.
    """
    from edgempir.fsutil import atomic_write_text, dumps_json
    from edgempir.targets.device.bench import BenchConfig, format_report, run_bench

    out = out or default_report_path(bundle)
    _check_writable(out)
    cfg = BenchConfig(batch_sizes=batch_sizes, warmup=warmup, repeats=repeats,
                      time_cap_s=time_cap, threads=threads, n=n,
                      square_queries=square_queries, square_n=square_n,
                      duration_s=duration, memory=not no_memory, seed=seed)
    report = run_bench(bundle, cfg, progress=None if as_json else _click_progress)
    text = dumps_json(report)
    atomic_write_text(out, text)  # a one-line WriteError if the disk fails us meanwhile
    if as_json:
        click.echo(text, nl=False)
    else:
        click.echo(format_report(report))
        click.echo(f"report: {out}")


def _check_writable(out: Path) -> None:
    """Fail before a minute of measuring, not after it: by creating a file where the report
    goes (os.access says yes to root on a read-only or special file system)."""
    import tempfile

    from edgempir.fsutil import show_path

    if out.is_dir():
        raise EdgempirError(f"cannot write the report to {show_path(out)} (a directory); "
                            "pass --out PATH in a writable directory")
    probe = out.resolve().parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".edgempir-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise EdgempirError(f"cannot write the report to {show_path(out)} "
                            f"({e.strerror or type(e).__name__}); pass --out PATH in a "
                            "writable directory") from None

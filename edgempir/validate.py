"""Where untrusted numbers and files enter: one check per kind of input (torch-free, numpy-free).

- Numbers from the command line: click parameter types that refuse ``nan``, ``inf`` and
  values outside a sane range, at parse time (:class:`Finite`, :func:`threads_type`,
  :func:`batch_type`); numbers from files: :func:`check_finite`; batch sizes against this
  machine's memory: :func:`check_batch_memory`.
- JSON files (run manifests, bundle manifests, eval reports, checkpoint metadata): read by
  :func:`read_json` / :func:`loads_json`, which cap the bytes before reading, bound the
  nesting depth (the parser's RecursionError and every recursive walk after it, report
  writing included), and refuse ``NaN``/``Infinity`` (not JSON). Writing is strict too:
  :func:`edgempir.fsutil.dumps_json`.
- TOML profiles: :func:`check_depth` on the parsed tables (targets/host/profiles.py).
- Paths inside messages: :func:`show_path` quotes a path so that a newline in it cannot
  split a one-line error.

docs/RELIABILITY.md and SECURITY.md list every cap.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import click

from edgempir.errors import EdgempirError
from edgempir.fsutil import show_path

MAX_JSON_DEPTH = 64            # our files nest at most ~8 levels (bundle manifest)
MAX_JSON_BYTES = 16 << 20      # 16 MiB: manifests and reports are a few kB to a few MB
MAX_THREADS = 1024             # more threads than any machine we target has cores
MAX_BATCH = 1 << 16            # images per batch from an option, before the memory check
MAX_SECONDS = 7 * 24 * 3600.0  # a week: durations and time caps


# ------------------------------------------------------------------ messages
def one_line(message: str) -> str:
    """``message`` with control characters escaped, so it stays on one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


# ------------------------------------------------------------------ JSON
def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise ValueError(f"{text} is not a finite number")
    return v


def loads_json(text: str | bytes, source: str, *, error: type[EdgempirError] = EdgempirError,
               hint: str = "", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse untrusted JSON: nesting bounded (the parser's RecursionError caught, then the
    depth of the result checked), NaN/Infinity refused.

    Errors are ``error(f"{source} ...; {hint}")``, one line.
    """
    tail = f"; {hint}" if hint else ""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{source} is not UTF-8 text{tail}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:  # the parser's own guard: deeper than Python's stack allows
        raise error(f"{source} nests deeper than {max_depth} levels{tail}") from None
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise error(f"{source} is not valid JSON ({one_line(str(e))}){tail}") from None
    # every later recursive walk (report writing, jsonable, json.dumps) stays shallow
    check_depth(obj, source, error=error, max_depth=max_depth, hint=hint)
    return obj


def read_json(path: str | os.PathLike, *, error: type[EdgempirError] = EdgempirError,
              hint: str = "", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and parse a JSON file, refusing it (one line, ``error``) before reading when it
    is larger than ``max_bytes``. A missing file raises FileNotFoundError for the caller."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise error(f"{show_path(path)} is {size} bytes, more than the {max_bytes} a "
                            f"JSON file of edgempir may have{tail}")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise error(f"{show_path(path)} cannot be read (a directory, not a JSON file)"
                    f"{tail}") from None
    except OSError as e:
        raise error(f"{show_path(path)} cannot be read ({e.strerror or e}){tail}") from None
    if len(data) > max_bytes:  # grew while we read it
        raise error(f"{show_path(path)} is more than {max_bytes} bytes{tail}")
    return loads_json(data, show_path(path), error=error, hint=hint, max_depth=max_depth)


def check_depth(obj: Any, source: str, *, error: type[EdgempirError] = EdgempirError,
                max_depth: int = MAX_JSON_DEPTH, hint: str = "") -> None:
    """Refuse parsed data (JSON, TOML tables) nested deeper than ``max_depth``; iterative,
    so any depth the parser produced is checked without recursion."""
    if not isinstance(obj, (dict, list)):
        return
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{source} nests deeper than {max_depth} levels"
                        + (f"; {hint}" if hint else ""))
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


# ------------------------------------------------------------------ numbers
def check_finite(value: float, what: str, lo: float | None = None, hi: float | None = None,
                 *, error: type[EdgempirError] = EdgempirError) -> float:
    """``value`` as a float if finite and within [lo, hi]; else a one-line ``error``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} = {value!r} is not a number") from None
    if not math.isfinite(v):
        raise error(f"{what} = {value!r} is not a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise error(f"{what} = {v:g} is outside {_range_text(lo, hi)}")
    return v


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    left = "-inf" if lo is None else f"{lo:g}"
    right = "inf" if hi is None else f"{hi:g}"
    return f"{'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"


class Finite(click.ParamType):
    """A float option that must be finite and inside [lo, hi] (``lo_open``: lo excluded).

    click's FloatRange lets ``nan`` through (every comparison with nan is False) and
    ``inf`` through an open-ended range.
    """

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number.", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        below = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        above = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if below or above:
            self.fail(f"{v:g} is not in the range "
                      f"{_range_text(self.lo, self.hi, self.lo_open, self.hi_open)}.", param, ctx)
        return v

    def __repr__(self) -> str:
        return f"Finite({self.lo}, {self.hi})"


def threads_type() -> click.IntRange:
    """``--threads``: 10^6 threads is a segfault after a minute, not a setting."""
    return click.IntRange(1, MAX_THREADS)


def batch_type() -> click.IntRange:
    """A batch-size option; the memory check comes where the image size is known."""
    return click.IntRange(1, MAX_BATCH)


def seconds_type(lo: float = 0.0, *, lo_open: bool = False) -> Finite:
    """A duration or time cap in seconds: finite, at most a week."""
    return Finite(lo, MAX_SECONDS, lo_open=lo_open)


def check_batch_memory(batch: int, per_image_bytes: int, what: str,
                       *, fraction: float = 0.5) -> None:
    """Refuse a batch whose input alone would take more than ``fraction`` of this machine's
    memory (psutil), before allocating it: a typo like ``--batch-sizes 1000000`` is an
    error, not an out-of-memory kill."""
    import psutil

    need = int(batch) * int(per_image_bytes)
    total = psutil.virtual_memory().total
    if need > fraction * total:
        raise EdgempirError(f"{what} {batch} needs {need / 2**30:.1f} GiB for its inputs alone, "
                            f"more than {fraction:.0%} of this machine's "
                            f"{total / 2**30:.1f} GiB; pass a smaller one")

"""Target profiles: the grammar (device side; TOML files are read by targets/host/profiles.py).

A profile is data (targets/profiles/{arm,jetson,x86}.toml, or a user's file): which runtime
runs it (the names: :data:`edgempir.targets.device.runtime.RUNTIMES`), which graph passes
``export`` applies and which graph rules it checks (the names: the registries of
``targets/host/passes.py``, checked by the host's profile loader), which ONNX
Runtime kernels must appear in the low-bit members' optimised graphs, and the runtime's
settings. :data:`SCHEMA` below is the whole grammar: an unknown table or key, or a value
of the wrong type, is an error naming it, so a typo never silently falls back to a default.

The profile is copied in full into the bundle's manifest as JSON: the device never
reads TOML.
"""
from __future__ import annotations

from typing import Any

from edgempir.contract import VOTE_FULL, VOTE_MODES
from edgempir.errors import EdgempirError
from edgempir.targets.device.runtime import RUNTIME_NAMES as RUNTIMES
from edgempir.targets.device.runtime import RUNTIMES as RUNTIME_REGISTRY
from edgempir.validate import MAX_BATCH, MAX_THREADS

OPT_LEVELS = ("disable", "basic", "extended", "all")
KNOWN_PROVIDERS_HINT = "CPUExecutionProvider, XnnpackExecutionProvider, ..."
MAX_WORKSPACE_MIB = 1 << 16    # 64 GiB of TensorRT builder workspace


class ProfileError(EdgempirError):
    """A target profile that is missing, unreadable or not valid."""


def _str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# table -> key -> (check, description, default); None as table key = top level
SCHEMA: dict[str | None, dict[str, tuple]] = {
    None: {
        "name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string", None),
        "description": (lambda v: isinstance(v, str), "a string", ""),
        "runtime": (lambda v: v in RUNTIMES, f"one of {', '.join(RUNTIMES)}", None),
    },
    "export": {
        "opset": (lambda v: _int(v) and 13 <= v <= 21, "an integer opset 13..21", 13),
        # the names are the host's registries' (targets/host/passes.py): the host's profile
        # loader checks them; on the device they are a record of what export applied
        "passes": (_str_list, "a list of graph pass names", []),
        "graph_rules": (_str_list, "a list of graph rule set names", []),
        "integer_kernels": (_str_list, "a list of ONNX op types", []),
        # how ensemble.onnx runs the vote (targets/host/graph.py): every member on every row,
        # or each member only where it can still change the decision (same decisions)
        "vote": (lambda v: v in VOTE_MODES, f"one of {', '.join(VOTE_MODES)}", VOTE_FULL),
    },
    "onnxruntime": {
        "providers": (lambda v: _str_list(v) and len(v) > 0,
                      f"a non-empty list of execution providers ({KNOWN_PROVIDERS_HINT})",
                      ["CPUExecutionProvider"]),
        "graph_optimization_level": (lambda v: v in OPT_LEVELS, f"one of {', '.join(OPT_LEVELS)}",
                                     "all"),
        "intra_op_threads": (lambda v: _int(v) and 0 <= v <= MAX_THREADS,
                             f"an integer 0..{MAX_THREADS} (0: default)", 0),
        "inter_op_threads": (lambda v: _int(v) and 0 <= v <= MAX_THREADS,
                             f"an integer 0..{MAX_THREADS} (0: default)", 0),
    },
    "tensorrt": {
        "versions": (lambda v: isinstance(v, list) and all(_int(x) and x in (10, 11) for x in v)
                     and len(v) > 0, "a list of TensorRT major versions from 10, 11", [10, 11]),
        "min_batch": (lambda v: _int(v) and 1 <= v <= MAX_BATCH, f"an integer 1..{MAX_BATCH}", 1),
        "opt_batch": (lambda v: _int(v) and 1 <= v <= MAX_BATCH, f"an integer 1..{MAX_BATCH}", 1),
        "max_batch": (lambda v: _int(v) and 1 <= v <= MAX_BATCH, f"an integer 1..{MAX_BATCH}",
                      64),
        "workspace_mib": (lambda v: _int(v) and 16 <= v <= MAX_WORKSPACE_MIB,
                          f"an integer 16..{MAX_WORKSPACE_MIB} (MiB)", 1024),
        "builder_optimization_level": (lambda v: _int(v) and 0 <= v <= 5, "an integer 0..5", 3),
        "tf32": (lambda v: isinstance(v, bool), "true or false", False),
    },
    "validation": {
        "min_agreement": (lambda v: _num(v) and 0.995 <= v <= 1.0,
                          "a number in [0.995, 1] (the issue's floor is 0.995)", 0.995),
    },
}


def validate(data: Any, source: str) -> dict:
    """Check ``data`` against :data:`SCHEMA`; return it with defaults filled in."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a TOML table")
    out: dict = {}
    for key, value in data.items():
        if key in SCHEMA and key is not None:
            if not isinstance(value, dict):
                raise ProfileError(f"{source}: [{key}] must be a table")
            continue
        if key not in SCHEMA[None]:
            tables = ", ".join(f"[{t}]" for t in SCHEMA if t)
            raise ProfileError(f"{source}: unknown key {key!r}; top-level keys are "
                               f"{', '.join(SCHEMA[None])} and tables {tables}")
    for table, keys in SCHEMA.items():
        section = data if table is None else data.get(table, {})
        dest = out if table is None else out.setdefault(table, {})
        for key, value in section.items():
            if table is None and key in SCHEMA:
                continue
            if key not in keys:
                raise ProfileError(f"{source}: unknown key {key!r} in [{table}]; known keys: "
                                   f"{', '.join(keys)}")
            check, what, _ = keys[key]
            if not check(value):
                where = key if table is None else f"{table}.{key}"
                raise ProfileError(f"{source}: {where} = {value!r} is invalid; it must be {what}")
            dest[key] = value
        for key, (_, what, default) in keys.items():
            if key not in dest:
                if default is None:
                    where = key if table is None else f"{table}.{key}"
                    raise ProfileError(f"{source}: {where} is missing; it must be {what}")
                dest[key] = list(default) if isinstance(default, list) else default
    _check_runtime_tables(out, data, source)
    t = out.get("tensorrt")
    if t and not t["min_batch"] <= t["opt_batch"] <= t["max_batch"]:
        raise ProfileError(f"{source}: [tensorrt] needs min_batch <= opt_batch <= max_batch")
    return out


def _check_runtime_tables(out: dict, data: dict, source: str) -> None:
    """A runtime whose registry entry says ``own_table`` needs its table and no other
    runtime may have it (the [onnxruntime] table is shared: export validates with ONNX
    Runtime whatever the target runs)."""
    for name, rt in RUNTIME_REGISTRY.items():
        if not rt.own_table:
            continue
        if out["runtime"] == name and name not in data:
            raise ProfileError(f"{source}: runtime '{name}' needs a [{name}] table")
        if out["runtime"] != name and name in data:
            raise ProfileError(f"{source}: [{name}] is only for runtime = '{name}'")
        if out["runtime"] != name:
            out.pop(name)

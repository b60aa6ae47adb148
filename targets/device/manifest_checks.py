"""The manifest's fields, checked one by one (device side): the one-line errors of
:func:`~edgempir.targets.device.bundle.verify_bundle` and the checks of its parts (paths,
keys, the copied target profile, the vote's execution, the reject policy).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from edgempir.contract import VOTE_MODES
from edgempir.errors import BundleError
from edgempir.fsutil import show_path
from edgempir.targets.device.profile import SCHEMA as PROFILE_SCHEMA  # no TOML read on the device

REEXPORT = "re-export it with 'edgempir export'"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def fail(path: Path, msg: str) -> BundleError:
    # manifest keys and names end up in the message: escape control characters, so that a
    # key like "\n" cannot break the one-line error
    msg = _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], msg)
    return BundleError(f"bundle {show_path(path)}: {msg}; {REEXPORT}")


def need(d: dict, key: str, types, where: str, path: Path):
    if not isinstance(d, dict) or key not in d:
        raise fail(path, f"manifest lacks {where}{key!r}")
    value = d[key]
    # bool is an int in Python; a manifest that says true where a count belongs is wrong
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise fail(path, f"manifest field {where}{key!r} has the wrong type")
    if not isinstance(value, types):
        raise fail(path, f"manifest field {where}{key!r} has the wrong type "
                          f"({type(value).__name__})")
    return value


def safe_relpath(bundle: Path, rel: Any) -> Path:
    """Resolve a manifest path, refusing anything that could leave the bundle."""
    if not isinstance(rel, str) or not rel or "\\" in rel or _CONTROL_RE.search(rel):
        raise fail(bundle, f"file path {short(rel)} is not a plain relative path")
    p = PurePosixPath(rel)
    # split by hand: PurePosixPath drops empty parts ("a//b", "a/") and "." parts
    if p.is_absolute() or any(part in ("..", "", ".") for part in rel.split("/")):
        raise fail(bundle, f"file path {rel!r} points outside the bundle")
    full = bundle.joinpath(*p.parts)
    # a symlink inside the bundle could still point outside it
    try:
        real = full.resolve(strict=False)
        root = bundle.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop: RuntimeError before Python 3.13
        raise fail(bundle, f"file path {rel!r} cannot be resolved") from None
    if root != real and root not in real.parents:
        raise fail(bundle, f"file path {rel!r} points outside the bundle (symlink)")
    return full


def short(value: Any, limit: int = 60) -> str:
    """repr of a manifest value, cut short: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_keys(path: Path, d: dict, known: frozenset, where: str) -> None:
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise fail(path, f"manifest has unknown key '{where}{unknown[0][:60]}' (this "
                          "edgempir does not know it)")


def check_profile(path: Path, profile: dict, runtime: str) -> None:
    """The manifest's copy of the target profile, against the same grammar as TOML profiles
    (targets/device/profile.py): the runtime reads its providers, threads and levels from here."""
    for key, value in profile.items():
        if key == "source":
            ok, what = isinstance(value, str), "a string"
        elif key in PROFILE_SCHEMA[None]:
            check, what, _ = PROFILE_SCHEMA[None][key]
            ok = check(value)
        elif key in PROFILE_SCHEMA:
            if not isinstance(value, dict):
                raise fail(path, f"profile.{key} is not a table")
            for k, v in value.items():
                if k not in PROFILE_SCHEMA[key]:
                    raise fail(path, f"profile.{key} has unknown key {short(k)}")
                check, what, _ = PROFILE_SCHEMA[key][k]
                if not check(v):
                    raise fail(path, f"profile.{key}.{k} = {short(v)} is invalid; it must "
                                      f"be {what}")
            continue
        else:
            raise fail(path, f"profile has unknown key {short(key)}")
        if not ok:
            raise fail(path, f"profile.{key} = {short(value)} is invalid; it must be {what}")
    if profile.get("runtime", runtime) != runtime:
        raise fail(path, f"profile.runtime {short(profile['runtime'])} differs from runtime "
                          f"{runtime!r}")


def check_vote_execution(path: Path, execution: Any, n_members: int, reference: int) -> None:
    """``vote_execution`` (absent in bundles from before issue 18: the full vote): a known
    mode, and an order that lists every member once with the reference last."""
    if execution is None:
        return
    if not isinstance(execution, dict) or execution.get("mode") not in VOTE_MODES:
        raise fail(path, f"vote_execution {short(execution)} is not an object with a mode "
                          f"({', '.join(VOTE_MODES)})")
    order = execution.get("order")
    if not isinstance(order, list) or sorted(order) != list(range(n_members)) or \
            any(isinstance(i, bool) for i in order) or order[-1] != reference:
        raise fail(path, f"vote_execution.order {short(order)} does not list every member "
                          "once with the reference member last")


def reject_fields(path: Path, manifest: dict) -> tuple[str | None, dict]:
    """``reject_policy`` (absent in bundles older than the ``accepted`` output) and the
    host's rejection rate per set."""
    from edgempir.vote import REJECT_POLICIES

    if "reject_policy" not in manifest:
        return None, {}
    policy = need(manifest, "reject_policy", dict, "", path)
    name = need(policy, "name", str, "reject_policy.", path)
    if name not in REJECT_POLICIES:
        raise fail(path, f"reject_policy.name {short(name)} is unknown (known: "
                          f"{', '.join(REJECT_POLICIES)})")
    rates = need(manifest, "host_rejection", dict, "", path)
    for key, rate in rates.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise fail(path, f"host_rejection.{key} = {short(rate)} is not a fraction")
    return name, rates

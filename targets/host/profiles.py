"""Target profiles as the exporter reads them: built-in TOML files or a user's TOML file.

The grammar (:data:`~edgempir.targets.device.profile.SCHEMA`) is the device side's: a bundle
carries its profile as JSON, validated on the device against the same schema, and the device
never reads TOML.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from edgempir.fsutil import show_path
from edgempir.targets.device.profile import ProfileError, validate
from edgempir.validate import check_depth, one_line

PROFILE_DEPTH = 8  # [table] key = [list]: three levels; a little room for errors to name

MAX_PROFILE_BYTES = 1 << 20  # 1 MiB: a profile is a few hundred bytes

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
BUILTIN = ("arm", "jetson", "x86")


def _toml():
    # tomllib arrived in Python 3.11; on 3.10 the host extra brings tomli
    if sys.version_info >= (3, 11):
        return importlib.import_module("tomllib")
    try:
        return importlib.import_module("tomli")
    except ImportError:
        raise ProfileError("reading a TOML profile on Python 3.10 needs tomli; "
                           "pip install tomli") from None


def load_profile(target: str | os.PathLike) -> dict:
    """A built-in profile by name (arm, jetson, x86) or a user's TOML file by path."""
    text = str(target)
    if text in BUILTIN:
        path, source = PROFILES_DIR / f"{text}.toml", f"built-in profile {text!r}"
    elif text.endswith(".toml") or os.sep in text or Path(text).is_file():
        path, source = Path(text), f"profile {show_path(text)}"
        if not path.is_file():
            raise ProfileError(f"profile file {show_path(text)} not found; pass a built-in target "
                               f"({', '.join(BUILTIN)}) or the path of a TOML profile")
    else:
        raise ProfileError(f"unknown target {text!r}; use one of {', '.join(BUILTIN)} or the "
                           "path of a TOML profile file")
    toml = _toml()
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{source}: more than {MAX_PROFILE_BYTES} bytes, too large to be "
                               "a target profile")
        data = toml.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ProfileError(f"{source}: not a UTF-8 text file") from None
    except OSError as e:
        raise ProfileError(f"{source}: cannot read it ({e.strerror})") from None
    except toml.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML ({one_line(str(e))})") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ProfileError(f"{source}: nested too deeply to be a target profile") from None
    # the grammar is two levels deep; bound the rest before anything walks it
    check_depth(data, source, error=ProfileError, max_depth=PROFILE_DEPTH)
    profile = validate(data, source)
    check_registered(profile, source)
    profile["source"] = "builtin" if text in BUILTIN else str(path)
    return profile


def check_registered(profile: dict, source: str) -> None:
    """Every pass and rule set the profile names is in its registry (passes.py)."""
    from edgempir.targets.host.passes import PASSES, RULES

    for key, what, registry in (("passes", "passes", PASSES),
                                ("graph_rules", "rule sets", RULES)):
        value = profile["export"][key]
        if any(name not in registry for name in value):
            raise ProfileError(f"{source}: export.{key} = {value!r} is invalid; it must be a "
                               f"list of {what} from: {', '.join(registry)}")

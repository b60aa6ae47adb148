"""Versions of what produced an artefact, in one place (torch-free, device-safe).

Read from the installed distributions' metadata, so asking for torch's version never imports
torch (the device side reports versions too).
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from edgempir._version import __version__

# import name -> distribution name, where they differ
_DISTRIBUTIONS = {"tensorrt": "tensorrt"}


def version_of(name: str) -> str | None:
    """The installed version of package ``name``, or None when it is not installed."""
    try:
        return metadata.version(_DISTRIBUTIONS.get(name, name))
    except metadata.PackageNotFoundError:
        # JetPack's TensorRT bindings come from apt and may carry no pip metadata
        module = sys.modules.get(name)
        return getattr(module, "__version__", None) if module else None


def versions(*packages: str) -> dict[str, str | None]:
    """``{"edgempir": ..., "python": ..., package: version, ...}`` for the named packages."""
    out: dict[str, str | None] = {"edgempir": __version__,
                                  "python": platform.python_version()}
    out.update({name: version_of(name) for name in packages})
    return out

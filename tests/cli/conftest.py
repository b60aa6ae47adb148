"""Fixtures for the command-line tests (the tiny bundle lives in tests/conftest.py).

- ``bundle``: the real thing, exported from the shared synthetic run (train -> eval quick ->
  export x86) once per session from tests/conftest.py's ``evaluated_run``; the tests
  that compare with the host use it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


# ----------------------------------------------------------------- the real bundle
@pytest.fixture(scope="session")
def bundle(x86_bundle) -> Path:
    """The session's x86 bundle (tests/conftest.py), under the name bench's tests use."""
    return x86_bundle


def find_python310() -> Path | None:
    """A Python 3.10 interpreter (the Jetson's): $EDGEMPIR_PY310, pyenv's, or PATH's."""
    import glob
    import subprocess

    for cand in (os.environ.get("EDGEMPIR_PY310"),
                 *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
                 shutil.which("python3.10")):
        if not cand:
            continue
        # a pyenv shim exists on PATH but may refuse to run: ask the interpreter itself
        proc = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 10)":
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def python310() -> Path:
    py = find_python310()
    if py is None:
        pytest.skip("no Python 3.10 here (set EDGEMPIR_PY310 to one); the device side targets "
                    "3.10 (JetPack 6)")
    return py

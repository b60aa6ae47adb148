"""Artefacts built once per test session, whatever the number of pytest-xdist workers.

A session fixture runs once per worker, so under ``-n 2`` (scripts/test.sh) every trained
run or exported bundle would be built twice. ``built_once`` builds it in a folder that all
workers of the session share (the parent of their base temp folders), under a file lock:
the first worker builds, the others wait and reuse. What it returns is read-only for the
tests (they copy before changing anything, as they already must within one worker).

``EDGEMPIR_TEST_ARTEFACTS=DIR`` keeps them in DIR across sessions instead: mutation runs
(scripts/mutation.sh) start one pytest session per mutant, and a test that needs the
trained run or a bundle would otherwise train and export again for every mutant. The
script empties DIR before each module, and the first session (the run that records which
tests execute which lines, on the unmutated code) builds them.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

DONE = ".built"


def shared_root(tmp_path_factory) -> Path:
    """The folder the workers of one session share; the base temp folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name`` built by ``build(path)`` exactly once per session; a build that failed
    (no marker) is removed and tried again by the next worker that asks, so that its error
    is reported there too."""
    kept = os.environ.get("EDGEMPIR_TEST_ARTEFACTS")
    root = Path(kept) if kept else shared_root(tmp_path_factory) / "shared-artefacts"
    root.mkdir(parents=True, exist_ok=True)
    target, stem = root / name, name.replace("/", "--")
    with open(root / f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{stem}{DONE}").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            build(target)
            (root / f"{stem}{DONE}").touch()
    return target


def exported_once(tmp_path_factory, run: Path, target: str) -> Path:
    """``run`` exported for ``target`` with 64 calibration images, once per session."""
    def build(out: Path) -> None:
        from edgempir.targets.host.export import export_bundle

        export_bundle(run, target, out, n_calib=64, progress=False)
    return built_once(tmp_path_factory, f"bundles/syn-{target}", build)

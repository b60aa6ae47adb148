"""The experiment directory: opening (or refusing) it, the invocation log, and the step
locks that let two invocations share it."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from edgempir.errors import EdgempirError
from edgempir.experiment.config import SCHEMA, SCHEMA_VERSION, ExperimentConfig, ExperimentError
from edgempir.experiment.layout import invocations_path, lock_path, locks_dir, state_path
from edgempir.validate import loads_json, read_json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def open_dir(cfg: ExperimentConfig, force: bool, argv: list[str] | None) -> Path:
    """Create or check ``--out``; refuse a directory started with other settings."""
    out = Path(cfg.out)
    state = state_path(out)
    if force and out.exists():
        if not state.is_file() and _foreign_files(out):
            raise ExperimentError(f"--force: {out} is not an experiment directory (no "
                                  "experiment.json); refusing to delete it, choose another --out")
        shutil.rmtree(out)
    if state.is_file():
        saved = read_json(state, error=ExperimentError,
                          hint="pass --force to start over, or choose another --out")
        saved = saved.get("settings") if isinstance(saved, dict) else None
        saved = saved if isinstance(saved, dict) else {}
        current = json.loads(json.dumps(cfg.settings()))
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current)
                          if saved.get(k) != current.get(k))
            raise ExperimentError(f"{out} was started with other settings ({', '.join(diff)}); "
                                  "rerun with the same options, pass --force to start over, "
                                  "or choose another --out")
    elif out.exists() and _foreign_files(out):
        raise ExperimentError(f"{out} exists and is not an experiment directory; choose "
                              "another --out")
    from edgempir.fsutil import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    if not state.is_file():
        atomic_write_json(state, {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                                  "settings": cfg.settings()})
    _log_invocation(out, argv)
    return out


def _foreign_files(out: Path) -> bool:
    # a log file redirected into --out by the shell may exist before we start
    return any(p.name != locks_dir(out).name and p.suffix != ".log" for p in out.iterdir())


def _log_invocation(out: Path, argv: list[str] | None) -> None:
    # one short line appended with O_APPEND: two invocations sharing --out cannot interleave
    line = json.dumps({"argv": argv, "started": now(), "pid": os.getpid()}) + "\n"
    with open(invocations_path(out), "a") as f:
        f.write(line)


def invocations(out: Path) -> list[dict]:
    path = invocations_path(out)
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        with contextlib.suppress(EdgempirError):
            lines.append(loads_json(text, str(path)))
    return lines


def try_lock(out: Path, name: str) -> Path | None:
    """Take the step's lock, or None if another live process holds it.

    The lock file holds the owner's pid; a lock whose process is gone is stale and taken
    over, so a killed run never blocks its own resume."""
    path = lock_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _lock_is_stale(path):
                return None
            path.unlink(missing_ok=True)
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def unlock(out: Path, name: str) -> None:
    lock_path(out, name).unlink(missing_ok=True)


def _lock_is_stale(path: Path) -> bool:
    try:
        text = path.read_text().strip()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False  # released meanwhile: try again
    if not text.isdigit():
        return age > 10  # the owner has not written its pid yet, or garbage
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def copy_run(src: Path, dst: Path) -> None:
    # eval/ of the source holds another subset's attacks, checkpoints/ only resume state:
    # neither is needed, and the source is never written to
    from edgempir.fsutil import atomic_dir

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("eval", "checkpoints"))


def read_json_files(paths) -> list[dict]:
    """The JSON files among ``paths`` that exist and parse (one being written by another
    invocation, or cut short by a crash, is skipped: its step is simply not done yet)."""
    found = []
    for path in paths:
        if path.is_file():
            with contextlib.suppress(OSError, EdgempirError):  # capped, depth-bounded reader
                found.append(read_json(path))
    return found

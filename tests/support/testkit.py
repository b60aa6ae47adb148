"""The test suite's shared helpers, one home each: the CLI's one-line-error contract,
bundle and manifest editing, tree snapshots, tiny ONNX members, and starting / killing
commands. ``import testkit`` from any test: pyproject's ``[tool.pytest.ini_options]
pythonpath`` puts tests/support (and only it: tests/edgempir would shadow the installed
package) on sys.path."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "edgempir.cli"]

# the exact settings of tests/conftest.py's fixtures, as command lines
TRAIN_ARGS = ("train", "--dataset", "synthetic", "--arch", "mnist", "--members",
              "w2a4,w4a4,fp32", "--epochs", "1", "--batch-size", "64", "--seed", "0")
# the session's evaluation (tests/conftest.py evaluated_run) and the eval fault test's: 32
# images keep both short (the masking checks take 32 anyway)
EVAL_ARGS = ("--config", "quick", "--n", "32", "--attacks", "pgd")
EXPORT_N_CALIB = 64


def resign(bundle: Path, edit=None) -> dict:
    """Apply ``edit(manifest)`` and rewrite the manifest with fresh sha256 of every file:
    a hostile bundle that is self-consistent, so only the check under test can refuse it."""
    from edgempir.targets.device.bundle import write_manifest

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.pop("files", None)
    if edit is not None:
        edit(manifest)
    return write_manifest(bundle, manifest)


def set_field(path: str, value):
    """An edit for ``resign``/``write_raw_manifest``: set the manifest field at the dotted
    ``path`` (list items by index, e.g. ``members.0.weight_bits``) to ``value``."""
    def edit(m):
        *parents, last = path.split(".")
        d = m
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return edit


def write_raw_manifest(bundle: Path, manifest: dict) -> None:
    """Write the manifest exactly as given (``files`` included, nothing recomputed)."""
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def one_line_error(proc: subprocess.CompletedProcess, needle: str = "") -> str:
    """The CLI's contract for bad input: exit 2, one line 'Error: ...', no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def refused(fn, error: type[Exception] | None = None, match: str = "") -> str:
    """``fn()`` raises ``error`` (default: any EdgempirError) with a one-line message
    containing ``match``; returns the message."""
    from edgempir.errors import EdgempirError

    with pytest.raises(error or EdgempirError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert match in msg, msg
    return msg


# ----------------------------------------------------------------- trees and manifests
def copy_tree(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    """A private copy of a session artefact, for a test that damages it."""
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_manifest(folder: Path, change) -> None:
    """Apply ``change(manifest)`` to folder/manifest.json and write it back as is (no
    sha256 recomputed: see ``resign`` for a self-consistent hostile bundle)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def file_contents(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` and its bytes: equal before and after = nothing changed."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``root`` with its size and mtime: a cheap "nothing was written"."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------- tiny ONNX members
def linear_member(seed: int, classes: int, shared_seed: int | None = None,
                  spread: float = 0.6):
    """input [B, 1, 2, 2] -> Flatten -> MatMul W -> logits [B, classes], a member in
    miniature. With ``shared_seed`` the members share most of W (they mostly agree)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(4, classes))
    if shared_seed is not None:
        w = np.random.default_rng(shared_seed).normal(size=(4, classes)) + spread * w
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["logits"], name="fc")]
    g = helper.make_graph(nodes, "member",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["batch", 1, 2, 2])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", classes])],
                          initializer=[numpy_helper.from_array(w.astype(np.float32), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


# ----------------------------------------------------------------- killing commands
def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=full)


def run_or_kill(args: list[str], delay: float | None, ready=None) -> dict:
    """Run the command; SIGKILL it ``delay`` seconds after ``ready()`` turned true (the
    command got past its imports into real work), unless it finished first. Returns
    {"killed", "rc", "stderr", "seconds", "delay"}."""
    t0 = time.perf_counter()
    proc = start(*args)
    while ready is not None and delay is not None and proc.poll() is None and not ready():
        if time.perf_counter() - t0 > 600:
            break
        time.sleep(0.05)
    try:
        _, err = proc.communicate(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        killed = True
    return {"killed": killed, "rc": proc.returncode, "stderr": err[-3000:],
            "seconds": round(time.perf_counter() - t0, 2), "delay": delay}


def kill_and_rerun(first_args, next_args, *, rng, kills: int, delay_range, check_state,
                   ready=None) -> list[dict]:
    """Start ``first_args``; kill it a random delay after ``ready()`` (a fresh predicate per
    run, from the factory ``ready``); ``check_state()``; rerun with ``next_args()`` (e.g.
    with --resume); repeat until ``kills`` kills are spent or the command finishes; then
    run it to completion. Returns the trials, for failure messages."""
    trials, args = [], list(first_args)
    for _ in range(kills):
        trial = run_or_kill(args, rng.uniform(*delay_range), ready() if ready else None)
        trials.append(trial)
        if not trial["killed"]:
            break
        trial["state"] = check_state()
        args = list(next_args())
    if not trials or trials[-1]["killed"]:
        trials.append(run_or_kill(args, None))
    last = trials[-1]
    assert last["rc"] == 0, (trials, last["stderr"])
    return trials


def colour_folder(root: Path, counts: dict[str, int], colours, shape: tuple[int, int],
                  *, noise: float, seed: int, prefix: str = "c", ext: str = "png") -> Path:
    """An ImageFolder layout (``root/<split>/<prefix><class>/<k>.<ext>``): ``counts[split]``
    images per class, each its class's RGB colour plus Gaussian noise, ``shape`` (H, W)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c, base in enumerate(colours):
            folder = root / split / f"{prefix}{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                img = np.clip(np.array(base) + rng.normal(0, noise, (*shape, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{k}.{ext}")
    return root

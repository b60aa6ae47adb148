"""Faults: SIGKILL at random points and at every step, and a full disk.

After every kill the artefact must be the old complete state, the new complete state, or
absent / an unfinished ``.partial`` that ``--resume`` continues; a rerun must then give
exactly what an uninterrupted run gives (weights, metrics, report numbers, file hashes).
A full disk must be one line ``Error: ...``, exit code 2, and leave the previous files.

Bounded: fixed seeds, two kills per command, each kill a random delay after the command
got past its imports. The delay ranges are shorter than the commands take on an idle
machine (train's synthetic epochs, export's writing phase), so a fast CI machine is still
killed mid-work rather than after the command finished. ``pytest -m faults`` runs it; timings in docs/RELIABILITY.md.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import testkit as H

from edgempir.errors import EdgempirError, WriteError
from edgempir.fsutil import atomic_dir, atomic_file, atomic_write_json, sha256_file

pytestmark = pytest.mark.faults

SEED = 20261124




# ----------------------------------------------------------------- kill at every step
# A child process does one atomic write and SIGKILLs itself at the k-th step: before or
# after each fsync, rename, exchange and rmtree. k = 1, 2, ... until it finishes: every
# point where a kill could land between two system calls of the writer is tried.
_STEP_KILLER = textwrap.dedent('''
    import os, shutil, signal, sys
    from pathlib import Path
    from edgempir import fsutil

    kill_at, what, target = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    count = 0

    def point():
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(owner, name):
        real = getattr(owner, name)
        def wrapped(*a, **k):
            point()
            out = real(*a, **k)
            point()
            return out
        setattr(owner, name, wrapped)

    for owner, name in ((os, "fsync"), (os, "replace"), (shutil, "rmtree"),
                        (fsutil, "_exchange")):
        hook(owner, name)
    if what == "no-exchange":  # the fallback for systems without renameat2
        fsutil._exchange = lambda a, b: False
    if what == "file":
        fsutil.atomic_write_bytes(target, b"new contents " * 100)
    else:
        with fsutil.atomic_dir(target, replace=True) as tmp:
            (tmp / "sub").mkdir()
            for name in ("a.onnx", "sub/b.npz", "manifest.json"):
                (tmp / name).write_bytes(b"new " + name.encode() * 50)
    print("finished after", count, "points")
''')


def _kill_at_every_step(tmp_path: Path, what: str, setup, read) -> tuple[set, int]:
    script = tmp_path / "step_killer.py"
    script.write_text(_STEP_KILLER)
    seen, k = set(), 0
    while True:
        k += 1
        target = setup()
        proc = subprocess.run([sys.executable, str(script), str(k), what, str(target)],
                              capture_output=True, text=True, timeout=60, check=False)
        seen.add(read(target))
        if proc.returncode == 0:
            return seen, k
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert k < 100, "the writer never finished"


def test_atomic_file_write_is_old_or_new_at_every_kill_point(tmp_path):
    path = tmp_path / "report.json"

    def setup():
        for p in tmp_path.glob(".report.json.tmp-*"):
            p.unlink()  # a killed writer's temporary file: never read, removed here
        path.write_bytes(b"old contents")
        return path

    seen, points = _kill_at_every_step(tmp_path, "file", setup, lambda p: p.read_bytes())
    assert seen == {b"old contents", b"new contents " * 100}, seen
    assert points >= 4


@pytest.mark.parametrize("what", ["exchange", "no-exchange"])
def test_atomic_dir_replace_is_old_or_new_at_every_kill_point(tmp_path, what):
    """With renameat2's exchange (Linux) the bundle path always holds a complete tree. The
    two-rename fallback has one moment with nothing at the path; the old tree is then
    intact at ``NAME.old-<pid>``, never lost."""
    root = tmp_path / "work"
    old_tree = {"a.onnx": b"old a", "calib/c.npz": b"old c", "manifest.json": b"old m"}

    def setup():
        shutil.rmtree(root, ignore_errors=True)
        for rel, data in old_tree.items():
            (root / "bundle" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "bundle" / rel).write_bytes(data)
        return root / "bundle"

    def read(target):
        if target.exists():
            return "old" if H.file_contents(target) == old_tree else \
                ("new" if set(H.file_contents(target)) == {"a.onnx", "sub/b.npz", "manifest.json"}
                 else f"MIXED {sorted(H.file_contents(target))}")
        olds = list(target.parent.glob("bundle.old-*"))
        assert len(olds) == 1 and H.file_contents(olds[0]) == old_tree, "old tree lost"
        return "absent, old kept aside"

    seen, _ = _kill_at_every_step(tmp_path, what, setup, read)
    if what == "exchange":
        assert seen == {"old", "new"}, seen
    else:
        assert seen == {"old", "new", "absent, old kept aside"}, seen


# ----------------------------------------------------------------- train, eval, export
def _weights(run: Path) -> list[dict]:
    from edgempir.rundir import load_weights

    m = json.loads((run / "manifest.json").read_text())
    return [load_weights(run / mm["file"])[0] for mm in m["members"]]


def _train_numbers(run: Path) -> dict:
    """What a run measured, without wall-clock figures."""
    m = json.loads((run / "manifest.json").read_text())
    drop = ("seconds", "images_per_second")
    return {"metrics": m["metrics"],
            "members": [{"spec": mm["spec"], "clean_accuracy": mm["clean_accuracy"],
                         "history": [{k: v for k, v in h.items() if k not in drop}
                                     for h in mm["history"]]} for mm in m["members"]]}


def _check_train_state(out: Path) -> str:
    from edgempir.rundir import load_weights, partial_dir, read_manifest

    partial = partial_dir(out)
    if out.exists():
        manifest = read_manifest(out)
        for mm in manifest["members"]:
            load_weights(out / mm["file"])
        assert not partial.exists()
        return "complete"
    if not partial.exists():
        return "absent"
    # every weights or checkpoint file present is whole: they are written atomically
    files = sorted(partial.rglob("*.safetensors"))
    for f in files:
        load_weights(f)
    if (partial / "config.json").exists():
        json.loads((partial / "config.json").read_text())
    return f"partial ({len(files)} weight files)"


def test_train_killed_at_random_points_resumes_to_the_uninterrupted_run(synthetic_run,
                                                                         tmp_path):
    import torch

    from edgempir.rundir import partial_dir

    out = tmp_path / "killed"
    args = [*H.TRAIN_ARGS, "--out", str(out)]

    def next_args():
        resumable = partial_dir(out).exists() or out.exists()
        return args + (["--resume"] if resumable else [])

    log = partial_dir(out) / "train.log"

    def ready():  # train.log grows when train() starts training and after every epoch
        base = log.stat().st_size if log.exists() else -1
        return lambda: (log.stat().st_size if log.exists() else -1) > base

    refused = []

    def check_state() -> str:
        state = _check_train_state(out)
        if state.startswith("partial") and not refused:
            # an interrupted run is never restarted over by accident: without --resume the
            # same command refuses, in one line that names the option
            H.one_line_error(subprocess.run([*H.CLI, *args], capture_output=True, text=True,
                                            timeout=300, check=False), "--resume")
            refused.append(state)
        return state

    trials = H.kill_and_rerun(args, next_args, rng=random.Random(SEED), kills=2,
                              delay_range=(0.2, 2.0), ready=ready, check_state=check_state)
    assert any(t["killed"] for t in trials) and refused, trials
    for ref, got in zip(_weights(synthetic_run), _weights(out)):
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), (k, trials)
    assert _train_numbers(out) == _train_numbers(synthetic_run), trials


def _strip_volatile(obj):
    """Reports without wall-clock figures and paths: what must be identical after a rerun."""
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items()
                if "second" not in k and k not in ("path", "versions", "created")}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def _check_eval_state(run: Path, inputs: dict) -> str:
    """The run's own files are untouched and every eval file present is whole."""
    assert {p: sha256_file(run / p) for p in inputs} == inputs, "eval changed its input"
    n = 0
    for f in sorted((run / "eval").rglob("*")) if (run / "eval").exists() else []:
        if not f.is_file() or ".tmp-" in f.name:
            continue  # a killed writer's temporary file: never read
        n += 1
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                for name in z.files:
                    z[name]
        elif f.suffix == ".png":
            data = f.read_bytes()
            assert data.startswith(b"\x89PNG") and data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82")
        else:
            f.read_text()
    return f"{n} eval files"


def test_eval_killed_at_random_points_reruns_to_the_same_report(synthetic_run, evaluated_run,
                                                                  tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval"))
    inputs = {p.relative_to(run).as_posix(): sha256_file(p)
              for p in [run / "manifest.json", *(run / "members").iterdir()]}
    args = ["eval", str(run), *H.EVAL_ARGS]
    def files() -> int:
        return sum(1 for _ in (run / "eval").rglob("*")) if (run / "eval").exists() else 0

    def ready():  # a new cached attack result (or report) appeared
        base = files()
        return lambda: files() > base

    finished: dict[Path, int] = {}  # attack runs finished before a kill: path -> mtime

    def check_state() -> str:
        state = _check_eval_state(run, inputs)
        for f in (run / "eval" / "partial").rglob("*@*.npz"):
            if ".rows-" not in f.name and ".tmp-" not in f.name:
                finished.setdefault(f, f.stat().st_mtime_ns)
        return f"{state}, {len(finished)} finished attack runs"

    trials = H.kill_and_rerun(args, lambda: args, rng=random.Random(SEED + 1), kills=2,
                              delay_range=(0.0, 3.0), ready=ready, check_state=check_state)
    assert any(t["killed"] for t in trials), trials
    # a finished attack run is read on resume, never computed again
    assert {f: f.stat().st_mtime_ns for f in finished} == finished, trials
    name = "adaptive-quick.json"
    got = json.loads((run / "eval" / name).read_text())
    ref = json.loads((evaluated_run / "eval" / name).read_text())
    assert _strip_volatile(got) == _strip_volatile(ref), trials
    with np.load(run / "eval" / "adv-adaptive.npz") as a, \
            np.load(evaluated_run / "eval" / "adv-adaptive.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _old_bundle(x86_bundle: Path, dst: Path) -> bytes:
    """A complete, valid bundle that differs from a fresh export in one data file: a mix of
    old and new files would then fail its sha256 check."""
    from edgempir.calib import read_set, write_set

    shutil.copytree(x86_bundle, dst)
    s = read_set(dst / "calib" / "calibration.npz")
    write_set(dst / "calib" / "calibration.npz", s["input"][:16], s["label"][:16])
    H.resign(dst)
    return (dst / "manifest.json").read_bytes()


def _check_export_state(out: Path, old_manifest: bytes, new_files: dict) -> str:
    from edgempir.targets.device.bundle import verify_bundle

    if not out.exists():  # only possible without renameat2: the old tree is kept aside
        olds = list(out.parent.glob(out.name + ".old-*"))
        assert olds, "bundle lost: neither the old nor the new one is there"
        verify_bundle(olds[0])
        return "absent, old kept aside"
    b = verify_bundle(out)  # every sha256 matches: never a mix of two exports
    if (out / "manifest.json").read_bytes() == old_manifest:
        return "old"
    assert b.manifest["files"] == new_files
    return "new"


def test_export_killed_at_random_points_leaves_old_or_new_bundle(evaluated_run, x86_bundle,
                                                                 tmp_path):
    out = tmp_path / "bundle"
    old_manifest = _old_bundle(x86_bundle, out)
    new_files = json.loads((x86_bundle / "manifest.json").read_text())["files"]
    args = ["export", str(evaluated_run), "--target", "x86", "--out", str(out), "--force",
            "--n-calib", str(H.EXPORT_N_CALIB)]
    def ready():  # this run's OUT.tmp-<pid> exists: it is writing the new bundle
        base = set(tmp_path.glob("bundle.tmp-*"))
        return lambda: bool(set(tmp_path.glob("bundle.tmp-*")) - base)

    trials = H.kill_and_rerun(args, lambda: args, rng=random.Random(SEED + 2), kills=2,
                              delay_range=(0.0, 1.0), ready=ready,
                              check_state=lambda: _check_export_state(out, old_manifest,
                                                                      new_files))
    assert any(t["killed"] for t in trials), trials
    # the rerun gives exactly the files of an uninterrupted export
    assert _check_export_state(out, old_manifest, new_files) == "new", trials


# ----------------------------------------------------------------- a full disk
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name], list(folder.rglob("*"))


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    """In process: fsync is where a full disk shows with delayed allocation."""
    path = tmp_path / "eval" / "adaptive-quick.json"
    atomic_write_json(path, {"old": True})
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(WriteError) as e:
        atomic_write_json(path, {"new": True})
    msg = str(e.value)
    assert isinstance(e.value, EdgempirError) and isinstance(e.value, OSError)
    assert "\n" not in msg and "No space left on device" in msg and str(path) in msg
    assert path.read_bytes() == before
    _no_temp_files(tmp_path)


def test_full_disk_in_a_writer_keeps_the_previous_file_and_tree(tmp_path, monkeypatch):
    """A writer inside atomic_file / atomic_dir (safetensors, onnx.save, np.savez) that hits
    ENOSPC: WriteError, the old file and the old tree stay, no temporary left."""
    f = tmp_path / "members" / "0-w2a4.safetensors"
    f.parent.mkdir()
    f.write_bytes(b"old weights")
    with pytest.raises(WriteError, match="No space left on device"), atomic_file(f) as tmp:
        tmp.write_bytes(b"half")
        _enospc()
    assert f.read_bytes() == b"old weights"

    bundle = tmp_path / "bundle"
    with atomic_dir(bundle) as tmp:
        (tmp / "manifest.json").write_text("old")
    with pytest.raises(WriteError, match="No space left on device"), \
            atomic_dir(bundle, replace=True) as tmp:
        (tmp / "manifest.json").write_text("new")
        _enospc()
    # fsync of the finished tree failing (the data never reached the disk) counts too
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(WriteError, match="No space left on device"), \
            atomic_dir(bundle, replace=True) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert H.file_contents(bundle) == {"manifest.json": b"old"}
    _no_temp_files(tmp_path)
    # safetensors reports a full disk as its own error type; save_weights maps it
    import torch
    from safetensors import SafetensorError

    from edgempir import rundir

    def full(*_a, **_k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.undo()
    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(WriteError, match="No space left on device"):
        rundir.save_weights(f, {"w": torch.zeros(2)})
    assert f.read_bytes() == b"old weights"


# the CLI with ENOSPC injected into every fsync of the process (works everywhere)
_ENOSPC_MAIN = textwrap.dedent('''
    import errno, os, sys
    def enospc(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.fsync = enospc
    from edgempir.cli import main
    sys.argv[0] = "edgempir"
    main()
''')


def _prepare(kind: str, synthetic_run, evaluated_run, x86_bundle, where: Path):
    """(command args, the previous artefact) for a command that replaces an artefact."""
    if kind == "train":
        prev = where / "run"
        shutil.copytree(synthetic_run, prev, ignore=shutil.ignore_patterns("eval"))
        return [*H.TRAIN_ARGS, "--json", "--out", str(prev), "--force"], prev
    prev = where / "bundle"
    shutil.copytree(x86_bundle, prev)
    return ["export", str(evaluated_run), "--target", "x86", "--json", "--out", str(prev),
            "--force", "--n-calib", "16"], prev


@pytest.mark.parametrize("kind", ["train", "export"])
def test_full_disk_injected_is_one_line_and_keeps_the_previous_artefact(
        kind, synthetic_run, evaluated_run, x86_bundle, tmp_path):
    args, prev = _prepare(kind, synthetic_run, evaluated_run, x86_bundle, tmp_path)
    before = H.file_contents(prev)
    proc = subprocess.run([sys.executable, "-c", _ENOSPC_MAIN, *args], capture_output=True,
                          text=True, timeout=300, check=False)
    H.one_line_error(proc, "No space left on device")
    assert H.file_contents(prev) == before
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != prev.name)
    # nothing half-written: train removes the work folder it made when nothing was trained
    assert leftovers == [], leftovers


def _unshare_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                               f"mount -t tmpfs -o size=64k tmpfs {d}"],
                              capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


# a real full disk: a tmpfs sized to hold the previous artefact plus a little, mounted in
# a private user and mount namespace (no root needed where user namespaces are allowed)
_TMPFS_DRIVER = textwrap.dedent('''
    import json, shutil, subprocess, sys
    from pathlib import Path
    src, mnt, args = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    prev = mnt / src.name
    shutil.copytree(src, prev)
    tree = lambda root: {p.relative_to(root).as_posix(): p.read_bytes()
                         for p in sorted(root.rglob("*")) if p.is_file()}
    before = tree(prev)
    proc = subprocess.run([sys.executable, "-m", "edgempir.cli", *args,
                           "--out", str(prev), "--force"], capture_output=True, text=True)
    print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr,
                      "intact": tree(prev) == before,
                      "left": sorted(p.name for p in mnt.iterdir() if p != prev)}))
''')


@pytest.mark.parametrize("kind", ["export"])
def test_full_disk_real_tmpfs_is_one_line_and_keeps_the_previous_artefact(
        kind, synthetic_run, evaluated_run, x86_bundle, tmp_path):
    if not _unshare_works():
        pytest.skip("no unprivileged user+mount namespaces here for a small tmpfs "
                    "(the injected ENOSPC test covers the same path)")
    args, prev = _prepare(kind, synthetic_run, evaluated_run, x86_bundle, tmp_path / "src")
    args = args[:args.index("--out")] + args[args.index("--out") + 3:]  # the driver adds them
    size = sum(p.stat().st_size for p in prev.rglob("*") if p.is_file())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(_TMPFS_DRIVER)
    limit_kib = size // 1024 + 1024  # the old artefact, plus 1 MiB: not enough for a new one
    shell = (f"mount -t tmpfs -o size={limit_kib}k tmpfs {mnt} && exec {sys.executable} "
             f"{driver} {prev} {mnt} '{json.dumps(args)}'")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    H.one_line_error(subprocess.CompletedProcess([], result["rc"], "", result["stderr"]),
                     "No space left on device")
    assert result["intact"], result
    assert set(result["left"]) <= {"run.partial"}, result

"""Hostile inputs, round two (issue 15): one test or more per class of the hostile pass.

1. non-finite and out-of-range numbers (options, files, profiles, a diverging training);
2. byte caps counted in bytes, before allocating (npz, ONNX, IDX raw and gzip);
3. nesting bounded where JSON and TOML are read;
4. other data than the run's (fingerprints in the run manifest, checked by eval/export);
5. environment faults (read-only --out, two writers of one new --out, resume files that
   do not fit);
6. small ones (a flag that does not exist in a hint, newlines in paths, "2" as a bit width).

Most run in process and in well under a second; the few that need a trained run reuse the
session fixtures of tests/conftest.py.
"""
from __future__ import annotations

import errno
import gzip
import io
import json
import math
import shutil
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import testkit as H
from click.testing import CliRunner

from edgempir.calib import read_set
from edgempir.data import DataError, read_idx, synthetic
from edgempir.errors import BundleError, EdgempirError, RunDirError, WriteError
from edgempir.targets.device.bundle import verify_bundle

refused = H.refused


def peak_bytes(fn) -> int:
    """Peak of Python/numpy allocations while ``fn()`` runs (its exception swallowed)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except EdgempirError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def cli_in_process(*args: str):
    """The CLI in this process (option parsing is all these tests need): exit code, stderr."""
    from edgempir.cli import main

    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output, result.exception


# ----------------------------------------------------------------- 1. numbers
@pytest.mark.parametrize("args", [
    ["train", "--lr", "nan"], ["train", "--lr", "inf"], ["train", "--lr", "1e308"],
    ["train", "--adv-eps", "nan"], ["train", "--adv-step-size", "inf"],
    ["train", "--trades-beta", "nan"], ["train", "--threads", "1000000"],
    ["train", "--batch-size", "1000000000"], ["train", "--seed", "-1"],
    ["eval", "RUN", "--threads", "1000000"], ["eval", "RUN", "--batch-size", "10000000"],
    ["bench", "B", "--duration", "nan"], ["bench", "B", "--time-cap", "inf"],
    ["bench", "B", "--duration", "1e12"], ["bench", "B", "--batch-sizes", "1,1000000000"],
    ["bench", "B", "--threads", "1000000"],
    ["experiment", "paper-vs-adaptive", "--adv-eps", "nan"],
])
def test_non_finite_and_absurd_options_are_refused_at_parse_time(args, tmp_path):
    out_dir = ["--out", str(tmp_path / "run")] if args[0] == "train" else []
    code, out, exc = cli_in_process(*args, *out_dir)
    assert code == 2, out
    assert "Invalid value" in out, out
    assert exc is None or isinstance(exc, SystemExit)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_json_is_written_strictly_and_nothing_is_left(tmp_path):
    from edgempir.fsutil import atomic_write_json

    path = tmp_path / "report.json"
    refused(lambda: atomic_write_json(path, {"loss": math.nan}), EdgempirError, "non-finite")
    assert list(tmp_path.iterdir()) == []


def test_profile_thread_counts_are_bounded(tiny_copy):
    """A bundle whose profile asks for 10**6 threads (a segfault after a minute) is refused
    by the device's check of the profile, before any session exists."""
    def many_threads(m):
        m["profile"].setdefault("onnxruntime", {})["intra_op_threads"] = 10 ** 6
    H.resign(tiny_copy, many_threads)
    refused(lambda: verify_bundle(tiny_copy), BundleError, "intra_op_threads")


def test_batches_that_cannot_fit_in_memory_are_refused():
    from edgempir.validate import check_batch_memory

    check_batch_memory(32, 4 * 28 * 28, "--batch-sizes: a batch of")
    refused(lambda: check_batch_memory(65536, 1 << 30, "--batch-sizes: a batch of"),
            EdgempirError, "GiB")


def test_a_diverging_training_stops_and_leaves_nothing(tmp_path, monkeypatch):
    """The loss becomes NaN at the second step: a one-line error, no run, no .partial to
    block the corrected rerun."""
    import torch

    import edgempir.adv_train as adv
    from edgempir import train as T
    from edgempir.members import parse_spec

    real = adv.training_step_loss
    calls = {"n": 0}

    def diverging(*args, **kwargs):
        loss, out, out_adv = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * torch.tensor(math.nan) if calls["n"] >= 2 else loss), out, out_adv

    monkeypatch.setattr(adv, "training_step_loss", diverging)
    cfg = T.TrainConfig(out=str(tmp_path / "run"), dataset="synthetic",
                        members=[parse_spec("fp32")], epochs=1, batch_size=512)
    refused(lambda: T.train(cfg, progress=False, echo=lambda s: None), EdgempirError,
            "diverged")
    assert list(tmp_path.iterdir()) == []
    assert T._check_out(cfg, resume=False, force=False).name == "run.partial"  # rerun may start


# ----------------------------------------------------------------- 2. byte caps
def _npz_member(name: str, header: dict, body: bytes = b"") -> bytes:
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, buf.getvalue() + body)
    return out.getvalue()


def test_npz_void_arrays_are_refused_before_allocating(tmp_path):
    """A small npz with a V1048576 array (one element, a MiB of raw bytes, compressed to
    a kB) is refused from its header: void and object arrays are no set's data."""
    path = tmp_path / "clean.npz"
    with open(path, "wb") as f:
        np.savez_compressed(f, input=np.zeros(64, dtype="V1048576"))
    assert path.stat().st_size < 200_000
    peak = peak_bytes(lambda: read_set(path))
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated for a refused set"
    refused(lambda: read_set(path), BundleError, "dtype |V1048576")


def test_npz_bytes_are_counted_not_elements(tmp_path):
    """2**27 + 1 float64 elements (1 GiB + 8 bytes) are under the old element cap (2**28)
    but over the byte cap: refused from the header alone."""
    path = tmp_path / "clean.npz"
    path.write_bytes(_npz_member("input.npy", {"descr": "<f8", "fortran_order": False,
                                               "shape": (2 ** 27 + 1,)}))
    refused(lambda: read_set(path), BundleError, "more than the 1073741824")


def test_onnx_files_are_size_checked_before_reading(tiny_copy, monkeypatch):
    """A matching sha256 does not make a file small: the size cap comes from stat, before
    the file is hashed or read."""
    from edgempir.targets.device import bundle as B

    size = (tiny_copy / "ensemble.onnx").stat().st_size
    monkeypatch.setattr(B, "MAX_ONNX_BYTES", size - 1)
    read = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real(self))
    refused(lambda: verify_bundle(tiny_copy), BundleError, f"more than the {size - 1}")
    assert "ensemble.onnx" not in read


def _gzip_stream(head: bytes, zeros: int, path: Path) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    with open(path, "wb") as f:
        f.write(comp.compress(head))
        block = bytes(1 << 20)
        f.writelines(comp.compress(block) for _ in range(zeros >> 20))
        f.write(comp.flush())


def test_idx_gzip_promising_far_more_than_it_can_hold_is_refused_uninflated(tmp_path):
    """A ~80 kB gzip whose header promises 10**5 images (78 MB, and really inflating to it):
    refused from the header and the file size, before a byte of the body is inflated."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_stream(bytes([0, 0, 8, 3]) + struct.pack(">3I", 100_000, 28, 28), 78_400_000, path)
    assert path.stat().st_size < 200_000
    peak = peak_bytes(lambda: read_idx(path))
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated for a refused file"
    refused(lambda: read_idx(path), DataError, "gzip bomb")


def test_idx_raw_big_file_with_bad_magic_is_refused_unread(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with open(path, "wb") as f:
        f.write(b"\x7fELF")
        f.truncate(256 << 20)  # sparse: no disk used
    peak = peak_bytes(lambda: read_idx(path))
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB read before the magic check"
    refused(lambda: read_idx(path), DataError, "bad magic")


def test_idx_raw_header_against_file_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 1_000_000, 28, 28))
        f.truncate(64 << 20)
    peak = peak_bytes(lambda: read_idx(path))
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated for a refused file"
    refused(lambda: read_idx(path), DataError, "truncated or corrupt")


def test_idx_gzip_and_raw_read_the_same(tmp_path):
    arr = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 4, 5) + arr.tobytes()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    assert np.array_equal(read_idx(tmp_path / "b.gz"), arr)
    assert read_idx(tmp_path / "a").flags.writeable


# ----------------------------------------------------------------- 3. nesting
def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deep_json_in_a_bundle_manifest_is_refused_where_it_is_read(tiny_copy):
    """eval_info nested 400 deep once reached RecursionError in bench's report writing,
    after the whole bench; it is refused when the manifest is read."""
    H.resign(tiny_copy)
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    manifest["eval_info"] = {"deep": _nested(400)}
    H.write_raw_manifest(tiny_copy, manifest)
    refused(lambda: verify_bundle(tiny_copy), BundleError, "nests deeper than 64 levels")


@pytest.mark.parametrize("depth", [100, 5000])
def test_deep_json_eval_report_is_refused_by_export(tmp_path, depth):
    from edgempir.targets.host.export import find_eval

    (tmp_path / "eval").mkdir()
    text = '{"schema": "edgempir.eval", "protocol": "adaptive", "results": ' + \
        "[" * depth + "]" * depth + "}"
    (tmp_path / "eval" / "adaptive-quick.json").write_text(text)
    refused(lambda: find_eval(tmp_path, {"config": "quick"}), RunDirError, "nests deeper")


@pytest.mark.parametrize("depth", [20, 5000])
def test_deep_toml_profile_is_refused(tmp_path, depth):
    from edgempir.targets.device.profile import ProfileError
    from edgempir.targets.host.profiles import load_profile

    path = tmp_path / "deep.toml"
    path.write_text('name = "deep"\nruntime = "onnxruntime"\n[export]\ninteger_kernels = '
                    + "[" * depth + "]" * depth + "\n")
    refused(lambda: load_profile(path), ProfileError, "nest")


def test_deep_json_run_manifest_is_refused(tmp_path):
    from edgempir.rundir import read_manifest

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"schema": "edgempir.run", "x": ' + "[" * 3000
                                       + "]" * 3000 + "}")
    refused(lambda: read_manifest(run), RunDirError, "nests deeper")


# ----------------------------------------------------------------- 4. wrong data
def _run_manifest(fingerprint=None) -> dict:
    ds = {"name": "synthetic", "input_shape": [1, 28, 28], "num_classes": 10}
    if fingerprint is not None:
        ds["fingerprint"] = fingerprint
    return {"dataset": ds}


def test_other_data_is_refused_allowed_with_the_flag_and_recorded():
    from edgempir.data import data_fingerprint
    from edgempir.rundir import data_used

    trained = synthetic(seed=0)
    other = synthetic(seed=7)  # same shapes, same classes, other images
    manifest = _run_manifest(data_fingerprint(trained))
    same = data_used(manifest, synthetic(seed=0), ("train", "test"), False)
    assert same["check"].startswith("same data") and same["source"] == "generated"
    refused(lambda: data_used(manifest, other, ("test",), False), DataError,
            "--allow-other-data")
    allowed = data_used(manifest, other, ("test",), True)
    assert allowed["check"].startswith("OTHER DATA") and allowed["allow_other_data"] is True
    assert allowed["fingerprint"]["test"] != manifest["dataset"]["fingerprint"]["test"]


def test_runs_without_a_fingerprint_still_work_with_a_note():
    from edgempir.rundir import data_used

    notes = []
    record = data_used(_run_manifest(), synthetic(), ("test",), False, notes.append)
    assert record["check"].startswith("not checked") and notes


def test_eval_refuses_other_data_before_attacking(synthetic_run, tmp_path, monkeypatch):
    """Through evaluate(): the run's fingerprint (written by train) against other data of
    the same shape; refused before any attack, and nothing written under eval/."""
    import edgempir.data as D
    from edgempir.robustness import evaluate

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval"))
    assert "fingerprint" in json.loads((run / "manifest.json").read_text())["dataset"]
    monkeypatch.setattr(D, "load_dataset", lambda name, data_dir=None, image_size=None: synthetic(seed=7))
    refused(lambda: evaluate(run, config="quick", attacks=["pgd"], n=8, progress=False),
            DataError, "differ from the data the run was trained on")
    assert not (run / "eval").exists()


# ----------------------------------------------------------------- 5. environment
def test_a_tree_created_by_another_writer_meanwhile_is_a_one_line_error(tmp_path):
    """Two exports to one new --out: the second to finish finds the first's tree."""
    from edgempir.fsutil import atomic_dir

    out = tmp_path / "bundle"

    def race():
        with atomic_dir(out) as tmp:
            (tmp / "mine").write_text("x")
            out.mkdir()  # the other export finished first
            (out / "theirs").write_text("y")

    refused(race, WriteError, "created by another command")
    assert sorted(p.name for p in out.iterdir()) == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no tmp tree left


def test_read_only_out_is_a_one_line_error(tmp_path, monkeypatch):
    from edgempir.fsutil import atomic_dir

    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if tmp_path in self.parents or self == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)

    def write():
        with atomic_dir(tmp_path / "ro" / "bundle"):
            pass

    refused(write, WriteError, "Read-only file system")


def test_the_cli_turns_any_os_error_into_one_line(monkeypatch):
    """The last net: an OSError from the environment that no writer caught."""
    from edgempir.targets.device import bench

    def boom(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", "/ro/x\ny")

    monkeypatch.setattr(bench, "run_bench", boom)
    code, out, _ = cli_in_process("bench", "B", "--out", "/tmp/edgempir-ro-test.json")
    assert code == 2 and out.count("\n") == 1 and "Read-only" in out and "\\n" in out, out


def test_resume_checkpoint_of_the_wrong_shape_is_a_one_line_error(tmp_path):
    import torch

    from edgempir import rundir
    from edgempir import train as T
    from edgempir.members import parse_spec

    cfg = T.TrainConfig(out=str(tmp_path / "run"), dataset="synthetic",
                        members=[parse_spec("fp32")], epochs=1, batch_size=512)
    work = rundir.partial_dir(cfg.out)
    work.mkdir()
    (work / "config.json").write_text(json.dumps(cfg.to_json()))
    rundir.save_weights(rundir.checkpoint_path(work, 0, cfg.members[0]),
                        {"model.conv.weight": torch.zeros(3)}, {"epoch": "1", "history": "[]"})
    refused(lambda: T.train(cfg, resume=True, progress=False, echo=lambda s: None),
            RunDirError, "does not fit this run")


def test_eval_partial_of_the_wrong_shape_is_recomputed(tmp_path):
    from edgempir.eval.store import load_partial, save_partial

    path = tmp_path / "pgd@surrogate.npz"
    save_partial(path, "fp", np.zeros((3, 1, 4, 4), np.float32), 1.0)
    assert load_partial(path, "fp", (3, 1, 4, 4)) is not None
    assert load_partial(path, "fp", (5, 1, 4, 4)) is None
    save_partial(path, "fp", np.full((3, 1, 4, 4), np.nan, np.float32), 1.0)
    assert load_partial(path, "fp", (3, 1, 4, 4)) is None


# ----------------------------------------------------------------- 6. small ones
def test_missing_provider_hint_names_no_flag_that_does_not_exist(tiny_bundle):
    from edgempir.targets.device.onnxruntime import make_session

    msg = refused(lambda: make_session(tiny_bundle / "ensemble.onnx",
                                       {"providers": ["NoSuchExecutionProvider"]}),
                  BundleError, "[onnxruntime] providers")
    assert "--providers" not in msg


def test_a_newline_in_a_path_cannot_split_the_error():
    code, out, _ = cli_in_process("bench", "/tmp/no\nsuch-bundle")
    assert code == 2 and out.count("\n") == 1 and out.startswith("Error: "), out
    assert "no\\nsuch-bundle" in out


@pytest.mark.parametrize("bits", ["2", 2.0, True, None])
def test_run_manifest_bit_widths_must_be_integers(tmp_path, bits):
    from edgempir.rundir import read_manifest

    run = tmp_path / "run"
    run.mkdir()
    member = {"index": 0, "spec": "w2a4", "weight_bits": bits, "act_bits": 4,
              "file": "members/0-w2a4.safetensors"}
    (run / "manifest.json").write_text(json.dumps({
        "schema": "edgempir.run", "schema_version": 1, "arch": "mnist", "combiner": "vote",
        "dataset": {"name": "synthetic", "input_shape": [1, 28, 28], "num_classes": 10},
        "members": [member]}))
    refused(lambda: read_manifest(run), RunDirError, "weight_bits")

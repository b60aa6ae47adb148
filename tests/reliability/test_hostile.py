"""Hostile inputs: each is refused with a one-line EdgempirError, and nothing in it runs.

Extends tests/targets/test_bundle.py (tampered member, '..' and absolute keys of ``files``,
symlinks, a few wrong types), tests/cli/test_bench_cli.py (tampered and missing files) and
tests/edgempir/test_data.py (damaged IDX, CIFAR pickle payload): here every file of a
bundle, pickles where weights and sets belong, ONNX graphs that reach outside the bundle
or use ops a device must not run, hostile manifests, and truncated readers' inputs.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import testkit as H

from edgempir.calib import read_set, write_set
from edgempir.data import DataError, load_dataset, read_idx
from edgempir.errors import BundleError, RunDirError
from edgempir.targets.device.bundle import verify_bundle

refused = H.refused


# ----------------------------------------------------------------- pickles never run
class Payload:
    """Unpickling this runs ``touch MARKER``: the marker file proves whether it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_file(path: Path, marker: Path, kind: str) -> None:
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"model.weight": Payload(marker)}, protocol=2))
    else:  # what torch.save writes: a zip holding data.pkl
        import torch

        torch.save({"model.weight": Payload(marker)}, str(path))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickled_weights_are_refused_and_never_unpickled(synthetic_run, tmp_path, kind):
    from edgempir.rundir import load_run, load_weights

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval"))
    marker = tmp_path / "PWNED"
    for f in (run / "members" / "0-w2a4.safetensors", run / "checkpoints" / "0-w2a4.safetensors"):
        _pickle_file(f, marker, kind)
        refused(lambda f=f: load_weights(f), RunDirError, "never unpickled")
    refused(lambda: load_run(run), RunDirError, "not a readable safetensors file")
    assert not marker.exists(), "the pickle payload ran"


def test_pickled_checkpoint_refused_by_train_resume(synthetic_run, cli, tmp_path):
    """CLI: a partial run whose checkpoint is a pickle; --resume refuses it in one line."""
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    shutil.copytree(synthetic_run, partial, ignore=shutil.ignore_patterns("eval", "members"))
    (partial / "manifest.json").unlink()
    marker = tmp_path / "PWNED"
    _pickle_file(partial / "checkpoints" / "0-w2a4.safetensors", marker, "pickle")
    proc = cli(*H.TRAIN_ARGS, "--json", "--out", str(out), "--resume", check=False)
    H.one_line_error(proc, "never unpickled")
    assert not marker.exists(), "the pickle payload ran"


def test_npz_with_pickled_objects_is_refused_and_never_unpickled(bundle_copy, cli, tmp_path):
    """An npz set whose label array is an object array (a pickle inside): refused by the
    reader, in process and through ``bench`` on a re-signed bundle."""
    marker = tmp_path / "PWNED"
    x = np.zeros((2, 1, 28, 28), np.float32)
    labels = np.array([Payload(marker), 1], dtype=object)
    path = bundle_copy / "calib" / "clean.npz"
    np.savez(path, input=x, label=labels)
    refused(lambda: read_set(path), BundleError, "dtype |O")
    H.resign(bundle_copy)  # self-consistent: only the reader stands in the way
    H.one_line_error(cli("bench", str(bundle_copy), "--no-memory", "--square-n", "0",
                         "--batch-sizes", "1", "--repeats", "1", check=False),
                     "dtype |O")
    assert not marker.exists(), "the pickle payload ran"


def test_a_pickle_where_a_set_belongs_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "clean.npz"
    path.write_bytes(pickle.dumps({"input": Payload(marker)}))
    refused(lambda: read_set(path), BundleError, "not a zip archive")
    assert not marker.exists()


# ----------------------------------------------------------------- ONNX graphs
def _edit_onnx(path: Path, edit) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    edit(model)
    path.write_bytes(model.SerializeToString())


def _largest_plain_initializer(model):
    from onnx import TensorProto

    plain = [t for t in model.graph.initializer
             if t.data_location != TensorProto.EXTERNAL and t.raw_data]
    return max(plain, key=lambda t: len(t.raw_data))


def _make_external(model, location: str, data_out: Path | None) -> None:
    from onnx import TensorProto

    t = _largest_plain_initializer(model)
    if data_out is not None:
        data_out.parent.mkdir(parents=True, exist_ok=True)
        data_out.write_bytes(t.raw_data)
    size = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


FP32 = "members/2-fp32.onnx"


@pytest.mark.parametrize("location", ["../../outside.bin", "../outside.bin",
                                      "sub/../../../outside.bin", "ABSOLUTE"])
def test_external_data_outside_the_bundle_is_refused(bundle_copy, tmp_path, location):
    outside = tmp_path / "outside.bin"
    if location == "ABSOLUTE":
        location = str(outside)
    _edit_onnx(bundle_copy / FP32, lambda m: _make_external(m, location, outside))
    H.resign(bundle_copy)  # every sha256 matches: only the graph check stands in the way
    refused(lambda: verify_bundle(bundle_copy), BundleError, "outside the bundle")


def test_external_data_in_an_unhashed_file_is_refused(bundle_copy, cli):
    data = bundle_copy / "members" / "weights.bin"
    _edit_onnx(bundle_copy / FP32, lambda m: _make_external(m, "weights.bin", data))
    manifest = H.resign(bundle_copy)
    del manifest["files"]["members/weights.bin"]
    H.write_raw_manifest(bundle_copy, manifest)
    refused(lambda: verify_bundle(bundle_copy), BundleError,
            "external data in members/weights.bin, which has no sha256")
    H.one_line_error(cli("bench", str(bundle_copy), check=False), "has no sha256")


def test_external_data_inside_the_bundle_and_hashed_is_accepted(x86_bundle, bundle_copy):
    """The check refuses what escapes, not external data as such (packed weights use it)."""
    from edgempir.calib import INPUT_NAME
    from edgempir.targets.device.runtime import open_model

    _edit_onnx(bundle_copy / FP32,
               lambda m: _make_external(m, "1-fp32.data", bundle_copy / "members" / "1-fp32.data"))
    H.resign(bundle_copy)
    b = verify_bundle(bundle_copy)
    x = read_set(b.calib_file("clean"))[INPUT_NAME][:8]
    _, got = open_model(b, 1, threads=1).run(x)
    _, ref = open_model(verify_bundle(x86_bundle), 1, threads=1).run(x)
    np.testing.assert_array_equal(got, ref)


def _custom_node(model):
    from onnx import helper

    model.graph.node.append(helper.make_node("Exec", ["input"], ["pwned"], domain="com.evil"))


def _custom_opset(model):
    from onnx import helper

    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _function(model):
    from onnx import helper

    model.functions.append(helper.make_function("local", "F", ["x"], ["y"],
                                                [helper.make_node("Identity", ["x"], ["y"])],
                                                [helper.make_opsetid("", 13)]))


def _op(op_type, **attrs):
    def edit(model):
        from onnx import helper

        model.graph.node.append(helper.make_node(op_type, ["input"], ["extra"], **attrs))
    return edit


def _subgraph(model):
    from onnx import TensorProto, helper

    body = helper.make_graph([], "body", [], [helper.make_tensor_value_info("input",
                                                                          TensorProto.FLOAT, [])])
    model.graph.node.append(helper.make_node("If", ["input"], ["extra"], then_branch=body,
                                             else_branch=body))


def _huge_initializer(dims):
    def edit(model):
        t = _largest_plain_initializer(model)
        del t.dims[:]
        t.dims.extend(dims)
    return edit


@pytest.mark.parametrize("edit, needle", [
    (_custom_node, "custom domain 'com.evil'"),
    (_custom_opset, "imports operator domain 'com.microsoft'"),
    (_function, "model-local functions"),
    (_op("ConstantOfShape"), "'ConstantOfShape', which is not on the allow-list"),
    (_op("Loop"), "'Loop', which is not on the allow-list"),
    (_subgraph, "subgraph in op 'If'"),
    (_op("ScatterND", reduction="add"), "ScatterND with a reduction"),
    (_huge_initializer([10 ** 6, 10 ** 6]), "more than 268435456 elements"),
    (_huge_initializer([-1, 16]), "negative dimension"),
], ids=["custom-domain-node", "custom-opset", "function", "ConstantOfShape", "Loop",
        "subgraph", "ScatterND-reduction", "1e12-elements", "negative-dim"])
def test_graphs_a_device_must_not_run_are_refused(bundle_copy, edit, needle):
    _edit_onnx(bundle_copy / FP32, edit)
    H.resign(bundle_copy)
    refused(lambda: verify_bundle(bundle_copy), BundleError, needle)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_malformed_onnx_is_refused_before_a_runtime_parses_it(bundle_copy, damage):
    path = bundle_copy / "ensemble.onnx"
    data = path.read_bytes()
    path.write_bytes({"garbage": os.urandom(4096), "truncated": data[:len(data) // 2],
                      "empty": b""}[damage])
    H.resign(bundle_copy)
    if damage == "empty":  # no fields at all: valid protobuf, nothing a runtime can run
        with pytest.raises(BundleError):
            from edgempir.targets.device.runtime import open_model

            open_model(verify_bundle(bundle_copy))
        return
    refused(lambda: verify_bundle(bundle_copy), BundleError, "not a valid ONNX model")


# ----------------------------------------------------------------- manifests
MANIFEST_CASES = {
    # issue 18: how the vote runs
    "vote-execution-mode": (H.set_field("vote_execution.mode", "fastest"), "vote_execution"),
    "vote-execution-order": (H.set_field("vote_execution.order", [2, 0, 0]), "vote_execution.order"),
    # wrong types
    "members-not-list": (H.set_field("members", {"0": {}}), "members"),
    "member-not-object": (H.set_field("members.0", "w2a4"), "members[0]"),
    "shape-strings": (H.set_field("input.shape", ["1", "28", "28"]), "input.shape"),
    "calib-entry-not-object": (H.set_field("calib.clean", "calib/clean.npz"), "calib.clean."),
    "host-accuracy-string": (H.set_field("host_accuracy.clean", "high"), "host_accuracy.clean"),
    # NaN is not JSON: refused by the reader before the field check (edgempir/validate.py)
    "host-accuracy-nan": (H.set_field("host_accuracy.clean", float("nan")), "NaN is not a JSON number"),
    "weight-bits-absurd": (H.set_field("members.0.weight_bits", 10 ** 9), "weight_bits"),
    # the member spec crosses to the device typed and checked (edgempir/contract.py)
    "spec-contradicts-bits": (H.set_field("members.0.weight_bits", 8), "weight_bits/act_bits 8/4"),
    "spec-unparsable": (H.set_field("members.0.spec", "w2a4; rm -rf"), "is not understood"),
    "reference-not-the-rule": (H.set_field("reference_member", 0), "the vote rule picks member 2"),
    "threads-string": (H.set_field("profile.onnxruntime.intra_op_threads", "4"), "intra_op_threads"),
    "opt-level-unknown": (H.set_field("profile.onnxruntime.graph_optimization_level", "turbo"),
                          "graph_optimization_level"),
    "providers-empty": (H.set_field("profile.onnxruntime.providers", []), "providers"),
    "profile-runtime-mismatch": (H.set_field("profile.runtime", "tensorrt"), "differs from runtime"),
    # unknown keys
    "unknown-top-level": (H.set_field("post_install", "curl x | sh"), "unknown key 'post_install'"),
    "unknown-member-key": (H.set_field("members.0.loader", "pickle"), "unknown key 'members[0].loader'"),
    "unknown-input-key": (H.set_field("input.preprocess", "eval"), "unknown key 'input.preprocess'"),
    "unknown-profile-key": (H.set_field("profile.onnxruntime.custom_op_library", "/tmp/evil.so"),
                            "unknown key 'custom_op_library'"),
    "unknown-calib-set": (H.set_field("calib.extra", {"file": "calib/clean.npz"}),
                          "unknown key 'calib.extra'"),
    # found by test_fuzz.py: a key "\n" put a newline into the one-line error
    "unknown-key-newline": (H.set_field("\n", None), "unknown key '\\n'"),
    "files-key-newline": (H.set_field("files.a\nb", "0" * 64), "'a\\nb' is not a plain relative path"),
    # absurd shapes and sizes
    "input-1e12-elements": (H.set_field("input.shape", [1, 10 ** 6, 10 ** 6]), "elements per image"),
    "input-zero-side": (H.set_field("input.shape", [1, 0, 28]), "input.shape"),
    "num-classes-mismatch": (H.set_field("num_classes", 10 ** 12), "num_classes"),
    # paths that leave the bundle
    "ensemble-dotdot": (H.set_field("ensemble_file", "../ensemble.onnx"), "ensemble.onnx"),
    "member-file-dotdot": (H.set_field("members.0.file", "members/../../x.onnx"), "members/../../x"),
    "calib-absolute": (H.set_field("calib.clean.file", "/etc/passwd"), "/etc/passwd"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_hostile_manifests_are_refused(bundle_copy, case):
    edit, needle = MANIFEST_CASES[case]
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    edit(manifest)
    H.write_raw_manifest(bundle_copy, manifest)
    refused(lambda: verify_bundle(bundle_copy), BundleError, needle)


@pytest.mark.parametrize("data", [
    b"[" * 100_000 + b"]" * 100_000,                 # deeper than the JSON parser's stack
    b'{"schema": "edgempir.bundle", "x": "' + b"a" * (17 << 20) + b'"}',
    b'{"schema": "edgempir.bundle\xff"}',
    b"[]",
], ids=["deep-nesting", "17-MiB", "not-utf8", "not-an-object"])
def test_manifests_that_are_not_json_objects_are_refused(bundle_copy, data):
    (bundle_copy / "manifest.json").write_bytes(data)
    refused(lambda: verify_bundle(bundle_copy), BundleError)


def test_a_manifest_that_is_a_folder_is_refused(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    (bundle_copy / "manifest.json").mkdir()
    refused(lambda: verify_bundle(bundle_copy), BundleError, "cannot be read")


def test_a_hostile_manifest_through_bench_is_one_line(bundle_copy, cli):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["members"][0]["file"] = "../../../etc/passwd"
    manifest["files"]["../../../etc/passwd"] = "0" * 64
    H.write_raw_manifest(bundle_copy, manifest)
    H.one_line_error(cli("bench", str(bundle_copy), check=False), "outside the bundle")


# ----------------------------------------------------------------- sha256 of every file
def test_every_file_is_covered_by_its_sha256(x86_bundle, tmp_path):
    """Flip one byte of each listed file in turn: each is refused, naming that file."""
    listed = json.loads((x86_bundle / "manifest.json").read_text())["files"]
    assert {"ensemble.onnx", "calib/clean.npz", "calib/adv-adaptive.npz"} <= set(listed)
    for rel in listed:
        b = tmp_path / rel.replace("/", "_")
        shutil.copytree(x86_bundle, b)
        data = bytearray((b / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (b / rel).write_bytes(bytes(data))
        refused(lambda b=b: verify_bundle(b), BundleError, f"{rel} does not match its sha256")
        shutil.rmtree(b)


def test_a_valid_but_swapped_set_is_refused_by_its_sha256(tiny_copy):
    """A well-formed replacement (other labels: a poisoned evaluation set) passes every
    reader check; only the sha256 catches it. Removing the sha256 check makes this fail."""
    s = read_set(tiny_copy / "calib" / "clean.npz")
    write_set(tiny_copy / "calib" / "clean.npz", s["input"], (s["label"] + 1) % 10)
    read_set(tiny_copy / "calib" / "clean.npz", (1, 28, 28), 10)  # well formed
    refused(lambda: verify_bundle(tiny_copy), BundleError,
            "calib/clean.npz does not match its sha256")


# ----------------------------------------------------------------- run manifests
RUN_CASES = {
    "weights-outside": (H.set_field("members.0.file", "../../../etc/passwd"), "members[0].file"),
    "weights-absolute": (H.set_field("members.0.file", "/etc/passwd"), "members[0].file"),
    "members-not-list": (H.set_field("members", "w2a4,fp32"), "members"),
    "member-without-file": (lambda m: m["members"][0].pop("file"), "members[0].file"),
    "shape-absurd": (H.set_field("dataset.input_shape", [1, 10 ** 6, 10 ** 6]), "input_shape"),
    "classes-bool": (H.set_field("dataset.num_classes", True), "num_classes"),
    "reference-out-of-range": (H.set_field("reference_member", 7), "reference_member"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_hostile_run_manifests_are_refused(synthetic_run, tmp_path, case):
    from edgempir.rundir import read_manifest

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    manifest = json.loads((run / "manifest.json").read_text())
    edit, needle = RUN_CASES[case]
    edit(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    refused(lambda: read_manifest(run), RunDirError, needle)


def test_deeply_nested_run_manifest_is_refused(tmp_path):
    from edgempir.rundir import read_manifest

    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(lambda: read_manifest(tmp_path), RunDirError, "nests deeper")


# ----------------------------------------------------------------- IDX, CIFAR, npz
def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_at_every_length_is_refused(tmp_path, gz):
    full = _idx(np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5))
    data = gzip.compress(full, mtime=0) if gz else full
    path = tmp_path / "images"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        refused(lambda: read_idx(path), DataError)
    path.write_bytes(data)
    assert read_idx(path).shape == (2, 5, 5)


def test_idx_dimensions_that_overflow_int64_are_refused(tmp_path):
    """65536**4 = 2**64 wraps to 0 in numpy's int64 product: the empty body then "matched"
    and reshape raised a ValueError (a traceback). Python ints now."""
    path = tmp_path / "images"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", *[65536] * 4))
    refused(lambda: read_idx(path), DataError, "more than 1 GiB")


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """A 200 MB stream of zeros behind a header for a 1x1x1 image: refused after reading
    two bytes of the body, not after allocating 200 MB."""
    import tracemalloc

    body = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1, 1, 1)
    comp = gzip.compress(body + bytes(200 << 20), compresslevel=1, mtime=0)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(comp)
    tracemalloc.start()
    try:
        refused(lambda: read_idx(path), DataError, "truncated or corrupt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MiB allocated for a refused file"


def test_cifar_python_batch_truncated_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
    data = pickle.dumps(batch, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(data)
    for cut in range(0, len(data) - 1, max(1, len(data) // 40)):
        (tmp_path / "test_batch").write_bytes(data[:cut])
        refused(lambda: load_dataset("cifar10", tmp_path), DataError)


def _valid_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, input=np.full((3, 1, 4, 4), 0.5, np.float32),
                        label=np.arange(3, dtype=np.int64))
    return buf.getvalue()


def test_npz_truncated_at_many_lengths_is_refused(tmp_path):
    data = _valid_npz()
    path = tmp_path / "clean.npz"
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        refused(lambda: read_set(path), BundleError)
    path.write_bytes(data)
    assert read_set(path)["input"].shape == (3, 1, 4, 4)


def test_a_bare_npy_is_not_a_set(tmp_path):
    """np.load returns an ndarray for .npy bytes; ``with`` on it raised a TypeError."""
    path = tmp_path / "clean.npz"
    np.save(path.with_suffix(".npy"), np.zeros(3, np.float32))
    path.with_suffix(".npy").rename(path)
    refused(lambda: read_set(path), BundleError, "not a zip archive")


def test_npz_member_that_is_not_an_array_is_refused(tmp_path):
    """A zip member without .npy came back as raw bytes (AttributeError on .dtype), and
    could be a zip bomb: refused before reading."""
    import zipfile

    path = tmp_path / "clean.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input", b"\0" * 64)
        z.writestr("label.npy", b"\0" * 64)
    refused(lambda: read_set(path), BundleError, "is not a .npy array")


def test_npz_with_an_absurd_header_is_refused_before_allocating(tmp_path):
    import zipfile

    from numpy.lib import format as npformat

    header = io.BytesIO()
    npformat.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                             "shape": (10 ** 6, 1, 1000, 1000)})
    path = tmp_path / "clean.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input.npy", header.getvalue() + b"\0" * 16)
        z.writestr("label.npy", header.getvalue())
    refused(lambda: read_set(path), BundleError, "more than the")


def test_garbage_npz_through_bench_is_one_line(bundle_copy, cli):
    (bundle_copy / "calib" / "clean.npz").write_bytes(b"PK\x03\x04" + os.urandom(512))
    H.resign(bundle_copy)
    H.one_line_error(cli("bench", str(bundle_copy), "--no-memory", check=False),
                     "calib/clean.npz")


# ----------------------------------------------------------------- interrupted early
def test_resume_of_a_partial_run_without_config_starts_afresh(cli, tmp_path):
    # a kill or a full disk between creating the folder and writing config.json: nothing
    # was trained yet, so --resume starts the run in the same folder instead of failing
    (tmp_path / "run.partial").mkdir()
    # two members: what is tested is where the run starts, not what it trains
    args = [*H.TRAIN_ARGS, "--json", "--out", str(tmp_path / "run"), "--resume"]
    args[args.index("--members") + 1] = "w2a4,fp32"
    proc = cli(*args, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "manifest.json").is_file()
    assert not (tmp_path / "run.partial").exists()
